"""The proto's enums and the domain's, both ways."""

from __future__ import annotations

from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, Decision, LengthNorm, Method
from labelprob.v1 import classifier_pb2 as pb

MODES = {
    pb.SCORING_MODE_UNSPECIFIED: Mode.AUTO,
    pb.SCORING_MODE_AUTO: Mode.AUTO,
    pb.SCORING_MODE_FIRST_TOKEN: Mode.FIRST_TOKEN,
    pb.SCORING_MODE_FULL: Mode.FULL,
    pb.SCORING_MODE_PRUNED: Mode.PRUNED,
}
NORMS = {
    pb.LENGTH_NORMALIZATION_UNSPECIFIED: LengthNorm.SUM,
    pb.LENGTH_NORMALIZATION_SUM: LengthNorm.SUM,
    pb.LENGTH_NORMALIZATION_MEAN: LengthNorm.MEAN,
}
CALIBRATIONS = {
    pb.CALIBRATION_UNSPECIFIED: None,
    pb.CALIBRATION_NONE: Calibration.NONE,
    pb.CALIBRATION_CONTEXTUAL: Calibration.CONTEXTUAL,
    pb.CALIBRATION_DOMAIN_PMI: Calibration.DOMAIN_PMI,
    pb.CALIBRATION_BATCH: Calibration.BATCH,
    pb.CALIBRATION_AUTO: Calibration.AUTO,
    pb.CALIBRATION_ONLINE: Calibration.ONLINE,
}
METHODS = {
    pb.SCORING_METHOD_UNSPECIFIED: None,
    pb.SCORING_METHOD_DIRECT: Method.DIRECT,
    pb.SCORING_METHOD_CHANNEL: Method.CHANNEL,
    pb.SCORING_METHOD_COMBINED: Method.COMBINED,
}
TRUNCATION = {
    pb.TRUNCATION_POLICY_UNSPECIFIED: None,
    pb.TRUNCATION_POLICY_TRUNCATE: True,
    pb.TRUNCATION_POLICY_REJECT: False,
}

MODES_OUT = {
    Mode.AUTO: pb.SCORING_MODE_AUTO,
    Mode.FIRST_TOKEN: pb.SCORING_MODE_FIRST_TOKEN,
    Mode.FULL: pb.SCORING_MODE_FULL,
    Mode.PRUNED: pb.SCORING_MODE_PRUNED,
}
METHODS_OUT = {m: k for k, m in METHODS.items() if m is not None}
CALIBRATIONS_OUT = {c: k for k, c in CALIBRATIONS.items() if c is not None}
DECISIONS_OUT = {
    Decision.NONE: pb.DECISION_UNSPECIFIED,
    Decision.ACCEPT: pb.DECISION_ACCEPT,
    Decision.ABSTAIN: pb.DECISION_ABSTAIN,
}
