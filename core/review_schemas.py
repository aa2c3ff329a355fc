"""Request and response bodies of the shared review queue and second opinions."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from core.schemas import ImageOut


class BatchIn(BaseModel):
    size: int = Field(default=20, ge=1, le=200, description="Images in the batch.")
    label: str | None = Field(default=None, description="Only images of this class.")
    second_opinion: bool = Field(
        default=False,
        description="Blind batch: decisions of others to check, shown without their label.",
    )


class BlindImage(BaseModel):
    """An image to give a second opinion on: nothing says what the first person decided."""

    id: int
    opinion_id: int
    width: int | None
    height: int | None


class BatchOut(BaseModel):
    expires_at: datetime = Field(description="When the batch goes back to the others, if idle.")
    second_opinion: bool = False
    items: list[ImageOut] = Field(default_factory=list)
    blind: list[BlindImage] = Field(default_factory=list)


class LeaseOut(BaseModel):
    expires_at: datetime
    held: int


class OpinionsIn(BaseModel):
    image_ids: list[int] | None = Field(
        default=None, max_length=10_000, description="Check the latest decision on these images."
    )
    top_relabels: int | None = Field(
        default=None, ge=1, le=10_000, description="Check the relabels of the N top-ranked images."
    )

    @model_validator(mode="after")
    def one_way(self) -> OpinionsIn:
        if (self.image_ids is None) == (self.top_relabels is None):
            raise ValueError("give image_ids or top_relabels")
        return self


class OpinionsCreated(BaseModel):
    created: int


class AnswerIn(BaseModel):
    label: str | None = Field(default=None, description="The class you see; omit to delete.")
    delete: bool = Field(default=False, description="The image does not belong in the dataset.")


class OpinionOut(BaseModel):
    id: int
    image_id: int
    state: str
    first_user: str | None
    first: str = Field(description="The first decision: a class name, or 'delete'.")
    second_user: str | None
    second: str | None
    answered_at: datetime | None


class TallyOut(BaseModel):
    decisions: int
    images: int
    relabelled: int
    deleted: int
    kept: int
    restored: int


class PersonProgress(TallyOut):
    user: str | None
    holding: int = Field(description="Images of the shared queue this person holds now.")
    checked: int = Field(description="Their decisions a second opinion answered.")
    agreed: int
    agreement: float | None = Field(description="agreed / checked")
    opinions_given: int


class ClassProgress(TallyOut):
    label: str | None = Field(description="The class the images had when decided.")


class ProgressOut(BaseModel):
    total: TallyOut
    queue_left: int = Field(description="Verified images nobody has decided about yet.")
    people: list[PersonProgress]
    classes: list[ClassProgress]
    open_opinions: int
    disagreements: int = Field(description="Second opinions that disagreed, still undecided.")
