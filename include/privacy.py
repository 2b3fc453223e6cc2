"""What of a system's message may leave the staged reports: the message with every student
identifier in it replaced by a placeholder, for logs, exceptions and emails.

IC's and the LMS's own messages often name the person they are about ("student 1000004 is not
actively enrolled", "username jane doe is taken"). Per-person detail belongs in the staged
reports only; logs and emails carry counts, reasons, section and lineItem ids and the systems'
messages passed through :func:`redacted`: the identifiers the caller knows the message may hold
(the row's sourcedId, username, email, names) become ``reference``, email addresses are masked,
and where the caller cannot tell whom a message is about (a whole call's error, an exception),
what looks like a person's identifier is masked too: UUIDs and numbers of five or more digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
# a person number, with or without a one-letter prefix (IC's 1.1 ids: s1000004, t3000001)
PERSON_NUMBER = re.compile(r"\b[A-Za-z]?\d{5,}\b")
MESSAGE_LIMIT = 300  # characters of a system's message kept in a log line or an email

PLACEHOLDER = "<id>"


def redacted(message: object, identifiers: Iterable[object] = (), *, reference: str = PLACEHOLDER,
             limit: int | None = MESSAGE_LIMIT, unknown_people: bool = True) -> str:
    """``message`` (any object, as text) with ``identifiers`` replaced by ``reference`` and email
    addresses by a placeholder, cut to ``limit`` characters (None: kept whole).

    With ``unknown_people`` (the caller cannot say whom the message is about) UUIDs and person
    numbers are masked too; a caller that knows the one person (a refusal of that person's item)
    passes False, so that the class and lineItem ids the message names stay readable."""
    text = EMAIL.sub("<email>", str(message))
    if unknown_people:
        text = UUID.sub(PLACEHOLDER, text)
    known = sorted({str(value).strip() for value in identifiers if value is not None and str(value).strip()},
                   key=len, reverse=True)
    for value in known:
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", reference, text, flags=re.IGNORECASE)
    if unknown_people:
        text = PERSON_NUMBER.sub(PLACEHOLDER, text)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
