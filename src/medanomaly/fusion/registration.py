"""Registration for fusion: :mod:`medanomaly.preprocess.registration` (moved there so that the
``anomaly`` atlas, a sibling of ``fusion``, registers with the same code); re-exported here."""

from medanomaly.preprocess.registration import (
    METRICS,
    STAGES,
    RegistrationResult,
    RigidParameters,
    as_scalar,
    foreground_points,
    load_scalar,
    mattes_mutual_information,
    register,
    resample_to,
    rigid_transform,
    target_registration_error,
    to_sitk_image,
    write_transform,
)

__all__ = ["METRICS", "STAGES", "RegistrationResult", "RigidParameters", "as_scalar", "foreground_points",
           "load_scalar", "mattes_mutual_information", "register", "resample_to", "rigid_transform",
           "target_registration_error", "to_sitk_image", "write_transform"]  # fmt: skip
