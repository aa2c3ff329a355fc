"""Projects, their classes and search queries, and who may work on them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.schemas import ClassIn, MemberOut, ProjectIn, QueryIn
from core.tables import Image, ImageClass, Project, ProjectMember, Role, SearchQuery, User


def _query(q: QueryIn | str) -> SearchQuery:
    if isinstance(q, str):
        # "grizzly bear -dog -arctos": the lesson's way of writing negative terms.
        words = q.split()
        negative = [w[1:] for w in words if w.startswith("-") and len(w) > 1]
        text = " ".join(w for w in words if not w.startswith("-"))
        return SearchQuery(text=text, negative_terms=negative)
    return SearchQuery(text=q.text, negative_terms=list(q.negative_terms))


def add_class(session: Session, project: Project, body: ClassIn) -> ImageClass:
    cls = ImageClass(project_id=project.id, name=body.name.strip())
    cls.queries = [_query(q) for q in body.queries]
    session.add(cls)
    session.flush()
    return cls


def create_project(session: Session, body: ProjectIn, owner_id: int) -> Project:
    project = Project(name=body.name, description=body.description, created_by=owner_id)
    session.add(project)
    session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=owner_id, role=Role.owner))
    for cls in body.classes:
        add_class(session, project, cls)
    session.flush()
    session.refresh(project)
    return project


def projects_for(session: Session, user_id: int, is_admin: bool) -> list[tuple[Project, Role]]:
    if is_admin:
        roles = {
            pid: role
            for pid, role in session.execute(
                select(ProjectMember.project_id, ProjectMember.role).where(
                    ProjectMember.user_id == user_id
                )
            )
        }
        projects = session.scalars(select(Project).order_by(Project.id))
        return [(p, roles.get(p.id, Role.owner)) for p in projects]
    rows = session.execute(
        select(Project, ProjectMember.role)
        .join(ProjectMember, ProjectMember.project_id == Project.id)
        .where(ProjectMember.user_id == user_id)
        .order_by(Project.id)
    )
    return list(rows)


def state_counts(session: Session, project_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Image.state, func.count())
        .where(Image.project_id == project_id)
        .group_by(Image.state)
    )
    return {state.value: n for state, n in rows}


def members(session: Session, project_id: int) -> list[MemberOut]:
    """The project's members by user name, with their roles."""
    rows = session.execute(
        select(ProjectMember, User)
        .join(User, User.id == ProjectMember.user_id)
        .where(ProjectMember.project_id == project_id)
        .order_by(User.username)
    )
    return [MemberOut(username=u.username, user_id=u.id, role=m.role) for m, u in rows]
