"""Explaining one decision from a partial draft (AdminService.ExplainDecision).

An administrator asks "would FR-NCB's Yellow notice's identity section reach
DE-BKA?" without writing a whole notice. `complete_draft` fills what the
question leaves out with the kind's defaults, so the catalogue's checks pass,
and says what it assumed:

- purpose: the kind's first purpose;
- data subject: the kind's first category;
- evaluation, where the kind requires one: B2 (Europol 4x4: usually reliable
  source, information known personally to the source);
- handling code, where the kind requires one: H0 (no restriction on use);
- sections: the kind's required sections are added for the catalogue check, and
  the decisions asked about are the sections given (all the kind's sections
  when none is given).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses

from broker.core.policy import Bundle
from broker.core.policy.model import NoticeFacts

DEFAULT_EVALUATION = ("B", "2")
DEFAULT_HANDLING = "H0"


@dataclasses.dataclass(frozen=True)
class CompletedDraft:
    facts: NoticeFacts  # what the catalogue checks and the policy decides
    asked: tuple[str, ...]  # the sections whose decisions answer the question
    assumed: tuple[str, ...]  # "field=value" for every default filled in


def complete_draft(bundle: Bundle, facts: NoticeFacts) -> CompletedDraft:
    """The draft with the kind's defaults filled in; an unknown kind is left as it is
    (the catalogue check names the kinds)."""
    spec = bundle.kinds.get(facts.kind)
    if spec is None:
        return CompletedDraft(facts, facts.sections, ())
    assumed: list[str] = []
    changes: dict[str, object] = {}
    if not facts.purpose and spec.purposes:
        changes["purpose"] = spec.purposes[0]
        assumed.append(f"purpose={spec.purposes[0]}")
    if not facts.data_subject and spec.data_subjects:
        changes["data_subject"] = spec.data_subjects[0]
        assumed.append(f"data_subject={spec.data_subjects[0]}")
    if not any(facts.evaluation) and "evaluation" in spec.required_header_fields:
        changes["evaluation"] = DEFAULT_EVALUATION
        assumed.append(f"evaluation={''.join(DEFAULT_EVALUATION)}")
    if not facts.handling_codes and "handling_codes" in spec.required_header_fields:
        changes["handling_codes"] = (DEFAULT_HANDLING,)
        assumed.append(f"handling_codes={DEFAULT_HANDLING}")
    asked = facts.sections or spec.sections
    added = tuple(s for s in spec.required_sections if s not in asked)
    if added:
        assumed.append(f"sections+={','.join(added)}")
    changes["sections"] = tuple(asked) + added
    return CompletedDraft(dataclasses.replace(facts, **changes), tuple(asked), tuple(assumed))  # type: ignore[arg-type]
