"""The API's messages in French (the default, as in the seed) and English.

A message is a key and parameters; it is rendered in the language the request asked for by
its Accept-Language header. Parameters are language-neutral (field names, numbers, ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Lang = Literal["fr", "en"]
DEFAULT_LANG: Lang = "fr"

# key: (French, English). The seed fixes the French wording of its messages.
CATALOG: dict[str, tuple[str, str]] = {
    # Successes
    "comment.created": ("Commentaire créé avec succès", "Comment created successfully"),
    "comment.updated": ("Commentaire modifié avec succès", "Comment updated successfully"),
    "comment.deleted": ("Commentaire supprimé avec succès", "Comment deleted successfully"),
    "presence.joined": ("Utilisateur connecté à la session", "User joined the session"),
    "presence.left": ("Utilisateur déconnecté de la session", "User left the session"),
    # Errors of the seed
    "error.comment_not_found": ("Commentaire non trouvé", "Comment not found"),
    "error.forbidden_update": (
        "Vous n'êtes pas autorisé à modifier ce commentaire",
        "You are not allowed to edit this comment",
    ),
    "error.forbidden_delete": (
        "Vous n'êtes pas autorisé à supprimer ce commentaire",
        "You are not allowed to delete this comment",
    ),
    "error.session_not_found": ("Session non trouvée", "Session not found"),
    "error.not_participant": (
        "Vous devez être participant de cette session",
        "You must be a participant of this session",
    ),
    # Authentication and limits
    "error.unauthenticated": ("Non authentifié", "Unauthenticated"),
    "error.token_invalid": (
        "Jeton d'authentification invalide", "Invalid authentication token"),
    "error.token_expired": ("Jeton d'authentification expiré", "Authentication token expired"),
    "error.rate_limited": (
        "Trop de commentaires : réessayez dans {retry_after} s",
        "Too many comments: try again in {retry_after} s",
    ),
    "error.typing_rate_limited": (
        "Trop d'indicateurs de frappe : réessayez dans {retry_after} s",
        "Too many typing updates: try again in {retry_after} s",
    ),
    # Transport-level errors
    "error.route_not_found": ("Ressource non trouvée", "Resource not found"),
    "error.method_not_allowed": ("Méthode non autorisée", "Method not allowed"),
    "error.unavailable": (
        "Service momentanément indisponible, réessayez", "Service unavailable, try again"),
    "error.internal": ("Erreur interne du serveur", "Internal server error"),
    # Validation
    "validation.content": (
        "Le contenu du commentaire est requis et doit contenir entre 1 et 1000 caractères",
        "The comment content is required and must contain between 1 and 1000 characters",
    ),
    "validation.content_control": (
        "Le contenu du commentaire ne doit pas contenir de caractères de contrôle",
        "The comment content must not contain control characters",
    ),
    "validation.malformed_json": (
        "Le corps de la requête n'est pas un JSON valide", "The request body is not valid JSON"),
    "validation.body_not_object": (
        "Le corps de la requête doit être un objet JSON", "The request body must be a JSON object"),
    "validation.body_too_large": (
        "Le corps de la requête dépasse {max_bytes} octets",
        "The request body exceeds {max_bytes} bytes",
    ),
    "validation.content_type": (
        "Le corps de la requête doit être envoyé en application/json",
        "The request body must be sent as application/json",
    ),
    "validation.required": ("Le champ {field} est requis", "The {field} field is required"),
    "validation.unknown_field": (
        "Le champ {field} n'est pas autorisé", "The {field} field is not allowed"),
    "validation.type": (
        "Le champ {field} doit être de type {type}", "The {field} field must be of type {type}"),
    "validation.uuid": (
        "Le champ {field} doit être un UUID valide", "The {field} field must be a valid UUID"),
    "validation.too_many": (
        "Le champ {field} ne peut pas contenir plus de {max} éléments",
        "The {field} field cannot contain more than {max} items",
    ),
    "validation.integer_range": (
        "Le paramètre {field} doit être un entier entre {min} et {max}",
        "The {field} parameter must be an integer between {min} and {max}",
    ),
    "validation.cursor": (
        "Le paramètre {field} n'est pas un curseur valide",
        "The {field} parameter is not a valid cursor",
    ),
    "validation.invalid": ("Le champ {field} est invalide", "The {field} field is invalid"),
    "validation.path_uuid": (
        "L'identifiant {field} doit être un UUID valide",
        "The {field} identifier must be a valid UUID",
    ),
    "validation.header": (
        "L'en-tête {field} doit contenir de 1 à {max} caractères ASCII imprimables sans espace",
        "The {field} header must hold 1 to {max} printable ASCII characters without spaces",
    ),
    "validation.mentions_not_participants": (
        "Les utilisateurs mentionnés doivent être participants de la session : {ids}",
        "Mentioned users must be participants of the session: {ids}",
    ),
    "validation.idempotency_reused": (
        "Cette clé Idempotency-Key a déjà servi pour une autre requête",
        "This Idempotency-Key was already used for a different request",
    ),
}

# Type names in validation messages.
TYPE_NAMES: dict[str, tuple[str, str]] = {
    "string": ("chaîne de caractères", "string"),
    "boolean": ("booléen", "boolean"),
    "array": ("tableau", "array"),
    "integer": ("entier", "integer"),
    "object": ("objet", "object"),
}


@dataclass(frozen=True)
class Message:
    key: str
    params: Mapping[str, object] = field(default_factory=dict)

    def render(self, lang: Lang) -> str:
        return render(self.key, lang, self.params)


def render(key: str, lang: Lang, params: Mapping[str, object] | None = None) -> str:
    fr, en = CATALOG[key]
    text = en if lang == "en" else fr
    if not params:
        return text
    if "type" in params:  # a JSON type's name is words, translated too
        params = {**params, "type": type_name(str(params["type"]), lang)}
    return text.format(**params)


def type_name(name: str, lang: Lang) -> str:
    fr, en = TYPE_NAMES.get(name, (name, name))
    return en if lang == "en" else fr


def negotiate(accept_language: str | None) -> Lang:
    """The supported language the client prefers most (RFC 9110 §12.5.4), French if none."""
    if not accept_language:
        return DEFAULT_LANG
    best: Lang = DEFAULT_LANG
    best_q = 0.0
    for item in accept_language.split(",")[:32]:
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        q = _quality(params)
        if q is None or q <= best_q:
            continue
        if primary == "en":
            best, best_q = "en", q
        elif primary in ("fr", "*"):
            best, best_q = "fr", q
    return best


def _quality(params: str) -> float | None:
    q = 1.0
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            if not 0.0 <= q <= 1.0:
                return None
    return q
