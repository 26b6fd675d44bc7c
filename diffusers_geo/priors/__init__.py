"""Where sampling starts: fitted priors for a truncated start (:mod:`.truncation`, :mod:`.prior`), the
prior-mismatch diagnostic (:mod:`.mismatch`), the PFGM++ prior, and the EM fitting they use (:mod:`.fitting`)."""

from ..data import encode_images
from .mismatch import PriorMismatch, as_mixture, noise_prior, plot_prior_mismatch, prior_mismatch
from .prior import PFGMPPPrior, TruncatedPrior
from .truncation import (
    PipelineLatents,
    ScheduleStart,
    TruncatedSchedule,
    schedule_start,
    truncated_schedule,
    truncated_sigmas,
)

__all__ = [
    "PFGMPPPrior",
    "PipelineLatents",
    "PriorMismatch",
    "ScheduleStart",
    "TruncatedPrior",
    "TruncatedSchedule",
    "as_mixture",
    "encode_images",
    "noise_prior",
    "plot_prior_mismatch",
    "prior_mismatch",
    "schedule_start",
    "truncated_schedule",
    "truncated_sigmas",
]
