"""The API's pure cores, without sockets or database: language negotiation, cursors, content
rules, validation messages, bearer parsing, Sanctum token format, the OpenAPI document."""

from __future__ import annotations

import uuid
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from api import cursor, errors, models, openapi, tokens, validation
from api.auth import bearer
from api.errors import ApiError, ErrorCode
from api.i18n import CATALOG, negotiate, render
from api.models import CommentCreate, CommentUpdate, TypingUpdate


@pytest.mark.parametrize(("header", "lang"), [
    (None, "fr"), ("", "fr"), ("en", "en"), ("en-US,en;q=0.9", "en"), ("fr-FR", "fr"),
    ("de, en;q=0.5", "en"), ("de", "fr"), ("en;q=0.2, fr;q=0.8", "fr"),
    ("fr;q=0.2, en;q=0.8", "en"), ("*", "fr"), ("en;q=0", "fr"), ("en;q=abc", "fr"),
    ("EN", "en"), ("en;q=nan", "fr"), ("x" * 10000, "fr"),
])
def test_language_negotiation(header: str | None, lang: str) -> None:
    assert negotiate(header) == lang


def test_every_message_exists_in_both_languages_with_the_same_parameters() -> None:
    import string

    for key, (fr, en) in CATALOG.items():
        fields_fr = {f[1] for f in string.Formatter().parse(fr) if f[1]}
        fields_en = {f[1] for f in string.Formatter().parse(en) if f[1]}
        assert fields_fr == fields_en, key
        assert fr, key
        assert en, key


def test_seed_messages_are_verbatim() -> None:
    assert render("error.comment_not_found", "fr") == "Commentaire non trouvé"
    assert render("error.session_not_found", "fr") == "Session non trouvée"
    assert render("error.not_participant", "fr") == "Vous devez être participant de cette session"
    assert render("error.forbidden_update", "fr") == (
        "Vous n'êtes pas autorisé à modifier ce commentaire")
    assert render("validation.content", "fr") == (
        "Le contenu du commentaire est requis et doit contenir entre 1 et 1000 caractères")
    assert render("comment.created", "fr") == "Commentaire créé avec succès"


def test_cursor_round_trip_is_exact_to_the_microsecond() -> None:
    at = datetime(2025, 1, 20, 10, 30, 0, 123456, tzinfo=UTC)
    cid = uuid.uuid4()
    token = cursor.encode(at, cid)
    assert token.isascii()
    assert "=" not in token
    assert "/" not in token
    assert "+" not in token
    pos = cursor.decode(token)
    assert pos == cursor.Position(at, cid)
    # Any time zone: the same instant.
    other = at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert cursor.decode(cursor.encode(other, cid)).created_at == at
    early = datetime(1960, 5, 1, tzinfo=UTC) + timedelta(microseconds=7)
    assert cursor.decode(cursor.encode(early, cid)).created_at == early


@pytest.mark.parametrize("token", [
    "", "x", "not-base64!!", "djE6MTI6YWJj", "djI6MTIzOjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw",
    "a" * 300, "é", "djE6OTk5OTk5OTk5OTk5OTk5OTk5OjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw",
])
def test_invalid_cursors_are_refused(token: str) -> None:
    with pytest.raises(cursor.InvalidCursor):
        cursor.decode(token)


@pytest.mark.parametrize(("raw", "stored"), [
    ("Super session !", "Super session !"),
    ("  padded\n", "padded"),
    ("<script>alert(1)</script>", "<script>alert(1)</script>"),
    ("multi\nline\ttext\r\nok", "multi\nline\ttext\r\nok"),
    ("x" * 1000, "x" * 1000),
    ("  " + "y" * 1000 + "  ", "y" * 1000),
    ("😀 émoji", "😀 émoji"),
])
def test_content_is_trimmed_and_otherwise_verbatim(raw: str, stored: str) -> None:
    assert CommentCreate.model_validate({"content": raw}).content == stored


@pytest.mark.parametrize(("raw", "key"), [
    ("", "validation.content"), ("   \n\t ", "validation.content"),
    ("x" * 1001, "validation.content"), ("nul\x00", "validation.content_control"),
    ("bell\x07", "validation.content_control"), ("c1\x85", "validation.content_control"),
    ("del\x7f", "validation.content_control"),
])
def test_bad_content_says_why(raw: str, key: str) -> None:
    with pytest.raises(ApiError) as info:
        validation.parse_body(f'{{"content": {__import__("json").dumps(raw)}}}'.encode(),
                              CommentCreate)
    assert info.value.code == ErrorCode.VALIDATION_ERROR
    assert info.value.status == 422
    assert info.value.message.key == key


def _message(body: bytes, model: type[BaseModel] = CommentCreate, lang: str = "fr") -> str:
    with pytest.raises(ApiError) as info:
        validation.parse_body(body, model)
    return info.value.render_message(lang)  # type: ignore[arg-type]


def test_validation_messages_name_the_problem() -> None:
    assert _message(b"{nope") == "Le corps de la requête n'est pas un JSON valide"
    assert _message(b"[1]") == "Le corps de la requête doit être un objet JSON"
    assert _message(b'"\\ud800"') == "Le corps de la requête n'est pas un JSON valide"
    assert _message(b'{"content": "\\ud800"}') == (
        "Le corps de la requête n'est pas un JSON valide")
    assert _message(b'{"content": "ok", "extra": 1}') == "Le champ extra n'est pas autorisé"
    assert _message(b'{"content": "ok", "mentions": "x"}') == (
        "Le champ mentions doit être de type tableau")
    assert _message(b'{"content": "ok", "mentions": "x"}', lang="en") == (
        "The mentions field must be of type array")
    assert _message(b'{"content": "ok", "mentions": ["nope"]}') == (
        "Le champ mentions[0] doit être un UUID valide")
    many = ",".join(f'"{uuid.uuid4()}"' for _ in range(51))
    assert _message(f'{{"content": "ok", "mentions": [{many}]}}'.encode()) == (
        "Le champ mentions ne peut pas contenir plus de 50 éléments")
    assert _message(b"{}", TypingUpdate) == "Le champ isTyping est requis"
    assert _message(b'{"isTyping": "true"}', TypingUpdate) == (
        "Le champ isTyping doit être de type booléen")
    assert _message(b'{"isTyping": 1}', TypingUpdate, "en") == (
        "The isTyping field must be of type boolean")
    assert _message(b"", CommentUpdate) == (
        "Le contenu du commentaire est requis et doit contenir entre 1 et 1000 caractères")
    # Several problems are all reported.
    assert _message(b'{"content": 1, "x": 2}') == (
        "Le contenu du commentaire est requis et doit contenir entre 1 et 1000 caractères"
        " ; Le champ x n'est pas autorisé")


def test_list_query() -> None:
    q = validation.parse_list_query([])
    assert (q.page, q.limit, q.before) == (1, 20, None)
    q = validation.parse_list_query([("page", "3"), ("limit", "100"), ("other", "x")])
    assert (q.page, q.limit) == (3, 100)
    for bad in [("page", "0"), ("page", "x"), ("limit", "101"), ("limit", "-1"),
                ("page", "1.5"), ("limit", "１"), ("page", "9" * 40), ("before", "")]:
        with pytest.raises(ApiError) as info:
            validation.parse_list_query([bad])
        assert info.value.code == ErrorCode.VALIDATION_ERROR, bad


def test_path_and_header_tokens() -> None:
    sid = uuid.uuid4()
    assert validation.path_uuid(str(sid), "sessionId") == sid
    assert validation.path_uuid(str(sid).upper(), "sessionId") == sid
    for bad in ["", "x", sid.hex, f"{{{sid}}}", f"urn:uuid:{sid}", f"{sid} "]:
        with pytest.raises(ApiError):
            validation.path_uuid(bad, "sessionId")
    assert validation.header_token({"X-Socket-ID": "123.456"}, "X-Socket-ID", 128) == "123.456"
    assert validation.header_token({}, "X-Socket-ID", 128) is None
    for bad in ["", "a b", "x" * 129, "é", "tab\t"]:
        with pytest.raises(ApiError):
            validation.header_token({"X-Socket-ID": bad}, "X-Socket-ID", 128)


def test_bearer_header_parsing() -> None:
    assert bearer("Bearer 1|abc") == "1|abc"
    assert bearer("bearer   1|abc ") == "1|abc"
    for bad in [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "1|abc"]:
        with pytest.raises(ApiError) as info:
            bearer(bad)
        assert info.value.code == ErrorCode.UNAUTHENTICATED
        assert info.value.status == 401
        assert info.value.headers["WWW-Authenticate"] == "Bearer"


def test_sanctum_token_format() -> None:
    plaintext = tokens.new_plaintext()
    entropy, crc = plaintext[:40], plaintext[40:]
    assert entropy.isalnum()
    assert len(crc) == 8
    assert crc == f"{zlib.crc32(entropy.encode()) & 0xFFFFFFFF:08x}"
    assert tokens.parse(f"12|{plaintext}") == tokens.ParsedToken(12, plaintext)
    assert tokens.parse(plaintext) == tokens.ParsedToken(None, plaintext)
    for bad in ["", "x|abc", "12|", "1" * 19 + "|abc", "12|a\x00b", "a" * 600]:
        assert tokens.parse(bad) is None
    assert tokens.matches(tokens.hash_plaintext(plaintext), plaintext)
    assert not tokens.matches(tokens.hash_plaintext(plaintext), plaintext + "x")


def test_rate_limited_error_rounds_retry_after_up() -> None:
    err = errors.rate_limited(0.2)
    assert (err.status, err.headers["Retry-After"]) == (429, "1")
    assert errors.rate_limited(41.01).headers["Retry-After"] == "42"


def test_openapi_document_is_generated_from_the_models() -> None:
    doc = openapi.build()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/api/sessions/{sessionId}/comments",
        "/api/sessions/{sessionId}/comments/{commentId}",
        "/api/sessions/{sessionId}/presence/join",
        "/api/sessions/{sessionId}/presence/leave",
        "/api/sessions/{sessionId}/presence/typing",
        "/api/sessions/{sessionId}/presence/users",
    }
    schemas = doc["components"]["schemas"]
    assert schemas["Comment"]["required"] == [
        "id", "content", "user", "mentions", "created_at", "updated_at"]
    assert "totalPages" in schemas["Pagination"]["properties"]
    create = doc["paths"]["/api/sessions/{sessionId}/comments"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CommentCreate"}
    assert set(create["responses"]) == {"201", "401", "403", "404", "413", "415", "422",
                                        "429", "503"}
    listing = doc["paths"]["/api/sessions/{sessionId}/comments"]["get"]
    names = {p["name"]: p for p in listing["parameters"]}
    assert names["limit"]["schema"]["maximum"] == models.LIMIT_MAX
    assert names["before"]["schema"]["type"] == "string"
    codes = set(schemas["ErrorDetail"]["properties"]["code"]["$ref"].split("/")[-1:])
    assert codes == {"ErrorCode"}
    assert {"COMMENT_NOT_FOUND", "FORBIDDEN", "VALIDATION_ERROR", "SESSION_NOT_FOUND",
            "NOT_PARTICIPANT", "UNAUTHENTICATED", "RATE_LIMITED"} <= set(
        schemas["ErrorCode"]["enum"])
