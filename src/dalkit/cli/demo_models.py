"""The demo's schema: users, their profiles and their posts, as SQLAlchemy 2 declarative models.

The tables are prefixed ``demo_`` and live in their own metadata, so that ``dalkit demo --url``
never touches an application's own ``users`` table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit.database import Database

__all__ = ["DemoBase", "Post", "User", "UserProfile", "reset_schema"]


class DemoBase(DeclarativeBase):
    """Base of the demo models; its metadata holds the demo tables and nothing else."""


class User(DemoBase):
    __tablename__ = "demo_users"
    __table_args__ = (UniqueConstraint("email", name="uq_demo_users_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())

    profile: Mapped[UserProfile | None] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )
    posts: Mapped[list[Post]] = relationship(
        back_populates="author", cascade="all, delete-orphan", order_by="Post.id"
    )

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, email={self.email!r})"


class UserProfile(DemoBase):
    __tablename__ = "demo_user_profiles"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("demo_users.id", ondelete="CASCADE"), primary_key=True
    )
    bio: Mapped[str] = mapped_column(Text, default="")
    website: Mapped[str | None] = mapped_column(String(255))

    user: Mapped[User] = relationship(back_populates="profile")


class Post(DemoBase):
    __tablename__ = "demo_posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(
        ForeignKey("demo_users.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    published: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())

    author: Mapped[User] = relationship(back_populates="posts")

    def __repr__(self) -> str:
        return f"Post(id={self.id!r}, title={self.title!r})"


def reset_schema(db: Database) -> None:
    """Drop and recreate the demo tables (only those), so that every run starts empty."""
    with db.connection() as connection:
        DemoBase.metadata.drop_all(connection)
        DemoBase.metadata.create_all(connection)
