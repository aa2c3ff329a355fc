"""Projects, classes, search queries and members."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import CurrentUser, DbSession, EditorAccess, OwnerAccess, ProjectAccess
from core import projects, query_stats, stats
from core.schemas import ClassIn, ClassOut, MemberIn, MemberOut, ProjectIn, ProjectOut, ProjectPatch
from core.tables import ImageClass, Project, ProjectMember, Role, User

router = APIRouter(tags=["projects"])


def _out(session: DbSession, project: Project, role: Role | None) -> ProjectOut:
    out = ProjectOut.model_validate(project)
    out.role = role
    out.counts = projects.state_counts(session, project.id)
    return out


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(session: DbSession, user: CurrentUser) -> list[ProjectOut]:
    return [_out(session, p, r) for p, r in projects.projects_for(session, user.id, user.is_admin)]


@router.post("/projects", response_model=ProjectOut, status_code=status.HTTP_201_CREATED)
def create_project(body: ProjectIn, session: DbSession, user: CurrentUser) -> ProjectOut:
    names = [c.name.strip() for c in body.classes]
    if len(set(names)) != len(names):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "class names must be unique")
    project = projects.create_project(session, body, user.id)
    return _out(session, project, Role.owner)


@router.get("/projects/{project_id}", response_model=ProjectOut)
def get_project(access: ProjectAccess, session: DbSession) -> ProjectOut:
    return _out(session, access.project, access.role)


@router.patch("/projects/{project_id}", response_model=ProjectOut)
def update_project(body: ProjectPatch, access: EditorAccess, session: DbSession) -> ProjectOut:
    if body.name is not None:
        access.project.name = body.name
    if body.description is not None:
        access.project.description = body.description
    return _out(session, access.project, access.role)


@router.post(
    "/projects/{project_id}/classes", response_model=ClassOut, status_code=status.HTTP_201_CREATED
)
def add_class(body: ClassIn, access: EditorAccess, session: DbSession) -> ImageClass:
    try:
        return projects.add_class(session, access.project, body)
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"class {body.name!r} exists") from exc


@router.get("/projects/{project_id}/members", response_model=list[MemberOut])
def list_members(access: ProjectAccess, session: DbSession) -> list[MemberOut]:
    return projects.members(session, access.project.id)


@router.put("/projects/{project_id}/members", response_model=MemberOut)
def set_member(body: MemberIn, access: OwnerAccess, session: DbSession) -> MemberOut:
    """Add a user to the project or change their role."""
    user = session.scalar(select(User).where(User.username == body.username))
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {body.username!r}")
    member = session.get(ProjectMember, (access.project.id, user.id))
    if member is None:
        member = ProjectMember(project_id=access.project.id, user_id=user.id)
        session.add(member)
    member.role = body.role
    session.flush()
    return MemberOut(username=user.username, user_id=user.id, role=member.role)


@router.delete("/projects/{project_id}/members/{username}", status_code=204)
def remove_member(username: str, access: OwnerAccess, session: DbSession) -> None:
    user = session.scalar(select(User).where(User.username == username))
    member = session.get(ProjectMember, (access.project.id, user.id)) if user else None
    if member is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{username!r} is not a member")
    owners = session.scalars(
        select(ProjectMember).where(
            ProjectMember.project_id == access.project.id, ProjectMember.role == Role.owner
        )
    ).all()
    if member.role is Role.owner and len(owners) == 1:
        raise HTTPException(status.HTTP_409_CONFLICT, "a project keeps at least one owner")
    session.delete(member)


@router.get("/projects/{project_id}/stats", response_model=list[stats.ClassStats])
def class_stats(access: ProjectAccess, session: DbSession) -> list[stats.ClassStats]:
    """Per class: images by state, rejections by reason, exact and near duplicates."""
    return stats.class_stats(session, access.project.id)


@router.get("/projects/{project_id}/queries/quality", response_model=list[query_stats.QueryQuality])
def query_quality(access: ProjectAccess, session: DbSession) -> list[query_stats.QueryQuality]:
    """Per search query: images harvested, rejected, deleted, relabelled and flagged."""
    return query_stats.query_quality(session, access.project.id)


@router.get("/projects/{project_id}/duplicates", response_model=list[stats.DuplicateGroup])
def duplicate_groups(
    access: ProjectAccess, session: DbSession, cross_class: bool = False
) -> list[stats.DuplicateGroup]:
    """Groups of exact or near duplicates; cross_class=true for those filed under two classes."""
    return stats.duplicate_groups(session, access.project.id, cross_class_only=cross_class)
