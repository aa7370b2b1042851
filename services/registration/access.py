"""Who may act on what: a coordinator acts on the programs their token names
(shared/tokens.py). A program, cohort or registration of another program answers
404, as one that does not exist, so ids of other programs cannot be probed."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from registration.service import RegistrationService
from shared.app import provided
from shared.security import Principal, Role, require_role

Coordinator = Annotated[Principal, Depends(require_role(Role.coordinator))]
Service = Annotated[RegistrationService, Depends(provided(RegistrationService))]


async def _program_in_scope(program_id: str, who: Coordinator) -> Principal:
    who.require(program_id, "program_id", "no such program")
    return who


async def _cohort_in_scope(cohort_id: str, who: Coordinator, service: Service) -> Principal:
    who.require(
        (await service.cohort_settings(cohort_id))["program_id"], "cohort_id", "no such cohort"
    )
    return who


async def _registration_in_scope(
    registration_id: str, who: Coordinator, service: Service
) -> Principal:
    _, program_id = await service.placement(registration_id)
    who.require(program_id, "registration_id", "no such registration")
    return who


ProgramCoordinator = Annotated[Principal, Depends(_program_in_scope)]
CohortCoordinator = Annotated[Principal, Depends(_cohort_in_scope)]
RegistrationCoordinator = Annotated[Principal, Depends(_registration_in_scope)]
