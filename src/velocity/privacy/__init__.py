"""Differential privacy: accounting on Google's ``dp-accounting`` and DP stages of the engine.

- Accounting (:mod:`velocity.privacy._accounting`): :class:`SamplingScheme`,
  :func:`compute_epsilon`, :class:`PrivacyAccountant` (epsilon after every round, the budget
  enforced), :func:`calibrate_noise_multiplier` (never overshoots), and the Gaussian
  mechanism's exact calibration for local DP (:func:`analytic_gaussian_sigma`).
- Stages: :class:`ClipUpdate` and :class:`LocalGaussianNoise` (client side),
  :class:`CentralDP` (DP-FedAvg's server side, fixed or adaptive clipping).
- :func:`plan_privacy`: a :class:`PrivacySettings` resolved against a federation.

``docs/privacy.md`` says what each mode protects and how it is accounted.
"""

from velocity.privacy._accounting import (
    DEFAULT_RDP_ORDERS,
    PrivacyAccountant,
    PrivacyBudgetExceededError,
    SamplingScheme,
    analytic_gaussian_sigma,
    calibrate_noise_multiplier,
    classic_gaussian_sigma,
    compute_epsilon,
    gaussian_delta,
    round_event,
)
from velocity.privacy._plan import PrivacyPlan, PrivacySettings, plan_privacy
from velocity.privacy._stages import (
    CentralDP,
    ClipUpdate,
    LocalGaussianNoise,
    adaptive_noise_split,
    clip_in_place,
    quiet_accounting,
)

__all__ = [
    "DEFAULT_RDP_ORDERS",
    "CentralDP",
    "ClipUpdate",
    "LocalGaussianNoise",
    "PrivacyAccountant",
    "PrivacyBudgetExceededError",
    "PrivacyPlan",
    "PrivacySettings",
    "SamplingScheme",
    "adaptive_noise_split",
    "analytic_gaussian_sigma",
    "calibrate_noise_multiplier",
    "classic_gaussian_sigma",
    "clip_in_place",
    "compute_epsilon",
    "gaussian_delta",
    "plan_privacy",
    "quiet_accounting",
    "round_event",
]
