"""Reading a policy bundle: TOML text -> validated specifications.

Every error names the file, line and column of what to fix. TOML syntax
errors carry them already; for semantic errors (an unknown group, an empty
list, a misspelt key) the line is found by scanning the text for the table
header or rule and the key inside it.

The package's modules, each importing only those above it: `text` (TOML parsed,
errors placed, value checks), `specs` (the dataclasses the parsers build), `catalogue`,
`groups` and `rules` (one file kind each). Import from `broker.core.policy.source`: this
module re-exports their interface.
"""

from __future__ import annotations

from broker.core.policy.source.catalogue import (
    parse_catalogue,
)
from broker.core.policy.source.groups import (
    parse_groups,
)
from broker.core.policy.source.rules import (
    EFFECTS,
    RESERVED_PREFIXES,
    TEMPLATE_FIELDS,
    Locate,
    parse_rules,
)
from broker.core.policy.source.specs import (
    CONDITION_KEYS,
    Catalogue,
    Condition,
    GroupSpec,
    RuleSpec,
    new_context,
)
from broker.core.policy.source.text import (
    PolicyError,
    SourceText,
    parse_toml,
)

__all__ = [
    "CONDITION_KEYS",
    "EFFECTS",
    "RESERVED_PREFIXES",
    "TEMPLATE_FIELDS",
    "Catalogue",
    "Condition",
    "GroupSpec",
    "Locate",
    "PolicyError",
    "RuleSpec",
    "SourceText",
    "new_context",
    "parse_catalogue",
    "parse_groups",
    "parse_rules",
    "parse_toml",
]
