"""Bad input refused before any work, naming the key and the fix: the config alone (`rules`, on the engine in
`schema`), then against the loaded dataset and the built models (`fit`)."""

from preempt.validation.fit import (
    MODEL_ROLES,
    check_models_fit_dataset,
    check_parts_fit_dataset,
    check_parts_fit_declared_dataset,
)
from preempt.validation.rules import load_score_model, validate_config
from preempt.validation.schema import option_name, read_section, validate_budget_or_refuse
from preempt.validation.targets import check_trusted_targets

__all__ = [
    "MODEL_ROLES",
    "check_models_fit_dataset",
    "check_parts_fit_dataset",
    "check_parts_fit_declared_dataset",
    "check_trusted_targets",
    "load_score_model",
    "option_name",
    "read_section",
    "validate_budget_or_refuse",
    "validate_config",
]
