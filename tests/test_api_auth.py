"""Sanctum-compatible authentication through real HTTP, and the pieces the transports reuse
(api.auth.authenticate, api.access.can_read_session)."""

from __future__ import annotations

import hashlib
import secrets
import string
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api import access, auth
from api.app import ApiConfig, create_app
from api.errors import ApiError, ErrorCode
from api.token_touch import TokenTouches
from tests import factories
from tests.factories import World
from tests.servers import serve


@pytest.fixture
def world(db: str) -> World:
    return factories.world(db, participants=2, outsiders=1)


@pytest.fixture
def base_url(db: str) -> Iterator[str]:
    with serve(create_app(ApiConfig(database_url=db))) as url:
        yield url


def listing(base_url: str, w: World, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.get(f"{base_url}/api/sessions/{w.session_id}/comments", headers=headers,
                     timeout=10)


def assert_unauthenticated(r: httpx.Response, message: str | None = None) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["success"] is False
    assert r.json()["error"]["code"] == "UNAUTHENTICATED"
    if message is not None:
        assert r.json()["error"]["message"] == message


def _laravel_now() -> datetime:
    """now() as Laravel stores it in a timestamp column: naive UTC, whole seconds."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def laravel_token(db: str, user_id: uuid.UUID, prefix: str = "") -> str:
    """What Laravel Sanctum 4's HasApiTokens::createToken does, step by step (PHP in comments)."""
    # $plainTextToken = $this->generateTokenString();
    #   sprintf('%s%s%s', config('sanctum.token_prefix', ''),
    #           $tokenEntropy = Str::random(40), hash('crc32b', $tokenEntropy));
    alphabet = string.ascii_letters + string.digits
    entropy = "".join(secrets.choice(alphabet) for _ in range(40))
    plain = f"{prefix}{entropy}{zlib.crc32(entropy.encode()) & 0xFFFFFFFF:08x}"
    # $token = $this->tokens()->create(['name' => $name, 'token' => hash('sha256', $plainTextToken),
    #           'abilities' => $abilities, 'expires_at' => $expiresAt]);
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
            " abilities, expires_at, created_at, updated_at) VALUES ('App\\Models\\User', %s,"
            " 'mobile', %s, '[\"*\"]', NULL, %s, %s) RETURNING id",
            (user_id, hashlib.sha256(plain.encode()).hexdigest(), _laravel_now(), _laravel_now()),
        ).fetchone()
    assert row is not None
    # return new NewAccessToken($token, $token->getKey().'|'.$plainTextToken);
    return f"{row[0]}|{plain}"


def test_a_token_minted_the_way_sanctum_mints_it_works(world: World, db: str,
                                                      base_url: str) -> None:
    for token in [laravel_token(db, world.owner), laravel_token(db, world.owner, prefix="cs_"),
                  factories.token(db, world.owner)]:
        r = listing(base_url, world, f"Bearer {token}")
        assert r.status_code == 200, r.text


def test_a_bare_plaintext_is_found_by_its_hash_as_sanctum_does(world: World, db: str,
                                                               base_url: str) -> None:
    token = factories.token(db, world.owner)
    assert listing(base_url, world, f"Bearer {token.split('|', 1)[1]}").status_code == 200


def test_missing_malformed_and_wrong_tokens(world: World, db: str, base_url: str) -> None:
    token = factories.token(db, world.owner)
    token_id, plain = token.split("|", 1)
    assert_unauthenticated(listing(base_url, world, None), "Non authentifié")
    for header in ["", "Bearer", "Basic dXNlcjpwYXNz", token, f"Token {token}"]:
        assert_unauthenticated(listing(base_url, world, header))
    for bad in [f"{token_id}|{plain[:-1]}x", f"{int(token_id) + 1000}|{plain}",
                f"{token_id}|", "abc|def", f"{token_id}|{plain}{plain}", "x" * 600,
                f"99999999999999999999|{plain}"]:
        assert_unauthenticated(listing(base_url, world, f"Bearer {bad}"),
                               "Jeton d'authentification invalide")
    # A token of one user used with another's id is refused (the hash is per row).
    other = factories.token(db, world.participants[1])
    assert_unauthenticated(listing(base_url, world, f"Bearer {token_id}|{other.split('|')[1]}"))
    r = httpx.get(f"{base_url}/api/sessions/{world.session_id}/comments",
                  headers={"Accept-Language": "en"})
    assert r.json()["error"]["message"] == "Unauthenticated"


def test_expired_tokens_and_deleted_users_are_refused(world: World, db: str,
                                                      base_url: str) -> None:
    expired = factories.token(db, world.owner, expires_in_seconds=-5)
    assert_unauthenticated(listing(base_url, world, f"Bearer {expired}"),
                           "Jeton d'authentification expiré")
    valid = factories.token(db, world.owner, expires_in_seconds=3600)
    assert listing(base_url, world, f"Bearer {valid}").status_code == 200
    # Expire it in the database, as Laravel would: refused from the next request on.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE personal_access_tokens SET expires_at = (now() AT TIME ZONE 'UTC')"
                     " - interval '1 second' WHERE id = %s", (int(valid.split("|")[0]),))
    assert_unauthenticated(listing(base_url, world, f"Bearer {valid}"))
    # A revoked (deleted) token.
    revoked = factories.token(db, world.owner)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM personal_access_tokens WHERE id = %s",
                     (int(revoked.split("|")[0]),))
    assert_unauthenticated(listing(base_url, world, f"Bearer {revoked}"))
    # A token whose user is gone.
    with psycopg.connect(db, autocommit=True) as conn:
        ghost = factories.user(conn, "Ghost", "User")
        orphan = factories.token(db, ghost)
        conn.execute("DELETE FROM users WHERE id = %s", (ghost,))
    assert_unauthenticated(listing(base_url, world, f"Bearer {orphan}"))


def test_sanctum_global_expiration_counts_from_created_at(world: World, db: str) -> None:
    token = factories.token(db, world.owner)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE personal_access_tokens SET created_at = created_at"
                     " - interval '10 minutes' WHERE id = %s", (int(token.split("|")[0]),))
    fresh = factories.token(db, world.owner)
    with serve(create_app(ApiConfig(database_url=db, token_expiration_minutes=5))) as base:
        assert_unauthenticated(listing(base, world, f"Bearer {token}"))
        assert listing(base, world, f"Bearer {fresh}").status_code == 200


@pytest.mark.anyio
async def test_authuser_expires_at_is_the_effective_deadline(world: World, db: str) -> None:
    lasting = factories.token(db, world.owner, expires_in_seconds=3600)
    async with AsyncConnectionPool(db, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        touches = TokenTouches(pool)
        plain = await auth.authenticate(pool, f"Bearer {lasting}", touches=touches)
        capped = await auth.authenticate(pool, f"Bearer {lasting}", expiration_minutes=10,
                                         touches=touches)
    assert plain.expires_at is not None
    assert capped.expires_at is not None
    # 60 minutes from now against 10 minutes after created_at (now).
    assert (plain.expires_at - capped.expires_at).total_seconds() == pytest.approx(3000, abs=2)
    assert 0 < (capped.expires_at - datetime.now(UTC)).total_seconds() <= 601


def _refreshed(db: str, token: str, than: datetime | None, within: float = 10.0) -> datetime:
    """last_used_at once it is newer than `than` (it is written after the request)."""
    deadline = time.monotonic() + within
    while True:
        value = factories.last_used(db, token)[0]
        if value is not None and (than is None or value > than):
            return value
        assert time.monotonic() < deadline, f"last_used_at still {value}"
        time.sleep(0.05)


def test_last_used_at_is_written_at_most_once_a_minute(world: World, db: str,
                                                       base_url: str) -> None:
    token = factories.token(db, world.owner)
    assert factories.last_used(db, token)[0] is None
    assert listing(base_url, world, f"Bearer {token}").status_code == 200
    _refreshed(db, token, None)
    with psycopg.connect(db, autocommit=True) as conn:
        # 30 s ago: recent enough, so requests leave it alone (no write per request).
        conn.execute("UPDATE personal_access_tokens SET last_used_at = (now() AT TIME ZONE"
                     " 'UTC')::timestamp(0) - interval '30 seconds' WHERE id = %s",
                     (int(token.split("|")[0]),))
    recent = factories.last_used(db, token)[0]
    for _ in range(5):
        assert listing(base_url, world, f"Bearer {token}").status_code == 200
    # A never-used token, noted after those requests: once it is written, whatever they
    # noted has been written too (each flush writes everything noted before it, and the
    # flushes run one after another).
    witness = factories.token(db, world.owner)
    assert listing(base_url, world, f"Bearer {witness}").status_code == 200
    _refreshed(db, witness, None)
    assert factories.last_used(db, token)[0] == recent
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE personal_access_tokens SET last_used_at = last_used_at"
                     " - interval '2 minutes' WHERE id = %s", (int(token.split("|")[0]),))
    stale = factories.last_used(db, token)[0]
    assert listing(base_url, world, f"Bearer {token}").status_code == 200
    refreshed = _refreshed(db, token, stale)
    assert stale is not None
    # Stored as Laravel stores it: naive UTC, whole seconds.
    assert refreshed.tzinfo is None
    assert refreshed.microsecond == 0


@pytest.mark.anyio
async def test_authenticate_and_can_read_session_for_the_transports(world: World,
                                                                    db: str) -> None:
    token = factories.token(db, world.owner, expires_in_seconds=600)
    outsider = factories.token(db, world.outsiders[0])
    async with AsyncConnectionPool(db, min_size=1, max_size=2, open=False,
                                   kwargs={"autocommit": True}) as pool:
        touches = TokenTouches(pool)
        user = await auth.authenticate(pool, f"Bearer {token}", touches=touches)
        assert user.user_id == world.owner
        assert user.token_id == int(token.split("|")[0])
        assert user.expires_at is not None
        assert user.expires_at.tzinfo is not None
        assert 500 < (user.expires_at - datetime.now(user.expires_at.tzinfo)).total_seconds() < 700
        never = await auth.authenticate(pool, f"Bearer {factories.token(db, world.owner)}",
                                        touches=touches)
        assert never.expires_at is None
        for header in [None, "Bearer nope", f"Bearer {token}x"]:
            with pytest.raises(ApiError) as info:
                await auth.authenticate(pool, header, touches=touches)
            assert info.value.code == ErrorCode.UNAUTHENTICATED

        stranger = await auth.authenticate(pool, f"Bearer {outsider}", touches=touches)
        async with pool.connection() as conn:
            await access.can_read_session(conn, world.session_id, user.user_id)
            with pytest.raises(ApiError) as info:
                await access.can_read_session(conn, world.session_id, stranger.user_id)
            assert (info.value.code, info.value.status) == (ErrorCode.NOT_PARTICIPANT, 403)
            with pytest.raises(ApiError) as info:
                await access.can_read_session(conn, uuid.uuid4(), user.user_id)
            assert (info.value.code, info.value.status) == (ErrorCode.SESSION_NOT_FOUND, 404)
