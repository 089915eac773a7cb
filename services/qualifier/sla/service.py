"""Sales members: who is in which team, who is away, and how many open leads each holds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.definitions.service import active
from services.qualifier.routing import repository as routing_repository
from services.qualifier.sla import repository
from services.qualifier.sla.schemas import MemberView


async def members_view(conn: AsyncConnection, now: datetime) -> list[MemberView]:
    """Everyone in the active definition's teams, and anyone marked absent, with their load."""
    _, definition = await active(conn)
    teams: dict[str, list[str]] = {}
    for team in definition.sales_teams:
        for member in team.members:
            teams.setdefault(member, []).append(team.team)
    absences = {a.member: a for a in await repository.list_absences(conn)}
    absent_now = await repository.absent_members(conn, now)
    load = await routing_repository.open_leads_by_assignee(conn)
    views = []
    for member in sorted({*teams, *absences}):
        absence = absences.get(member)
        views.append(
            MemberView(
                member=member,
                teams=teams.get(member, []),
                absent=member in absent_now,
                absent_until=absence.absent_until if absence and member in absent_now else None,
                note=absence.note if absence else None,
                open_leads=load.get(member, 0),
            )
        )
    return views
