"""SMTP answers -> error categories (DESIGN.md section 6), shared by the email providers.

Email has no phone numbers, so `invalid_number` is never used for it. The choices:
- an address that does not exist, a disabled or full mailbox, a domain without mail
  servers: `unreachable` (the email counterpart of an unknown handset);
- a refusal by the receiver's policy, reputation or authentication filters (spam block
  lists, DMARC, "delivery not authorized"): `blocked`;
- a refusal because of what the message carries (size, attachment, virus, spam content):
  `content_rejected`;
- a queue that gave up retrying: `expired`; too many recipients or messages: `rate_limited`;
- the sender's own suppression/unsubscribe lists: `opted_out` (set by each provider).

Pure data plus one function: an RFC 3463 enhanced status code (`5.1.1`) decides first,
then well-known words of the diagnostic text, then the basic reply code (`550`).
"""

from __future__ import annotations

import re

from processors.model import ERROR_CATEGORIES

# RFC 3463 `class.subject.detail`; only permanent (5) and transient (4) classes matter.
_ENHANCED_RE = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BASIC_RE = re.compile(r"(?<![\d.])([45]\d\d)(?![\d.])")

# (subject, detail) -> category, for the details that say more than their subject.
ENHANCED_DETAILS: dict[tuple[int, int], str] = {
    (1, 1): "unreachable",  # bad destination mailbox address (user unknown)
    (1, 2): "unreachable",  # bad destination system address (no such domain)
    (1, 3): "unreachable",  # bad destination mailbox address syntax
    (1, 10): "unreachable",  # recipient domain has a null MX
    (2, 1): "unreachable",  # mailbox disabled, not accepting messages
    (2, 2): "unreachable",  # mailbox full
    (2, 3): "content_rejected",  # message length exceeds administrative limit
    (3, 4): "content_rejected",  # message too big for system
    (4, 7): "expired",  # delivery time expired
    (5, 3): "rate_limited",  # too many recipients
    (6, 0): "content_rejected",  # other media / content error
    (7, 1): "blocked",  # delivery not authorized, message refused
}
# subject -> category when the detail is not listed.
ENHANCED_SUBJECTS: dict[int, str] = {
    1: "unreachable",  # addressing
    2: "unreachable",  # mailbox
    3: "unreachable",  # mail system
    4: "unreachable",  # network and routing
    5: "provider_error",  # mail delivery protocol
    6: "content_rejected",  # message content or media
    7: "blocked",  # security or policy
}
# Words of a diagnostic text, checked in this order (first match wins).
KEYWORDS: tuple[tuple[str, str], ...] = (
    ("virus", "content_rejected"),
    ("attachment", "content_rejected"),
    ("message too large", "content_rejected"),
    ("message size", "content_rejected"),
    ("spam content", "content_rejected"),
    ("blocklist", "blocked"),
    ("blacklist", "blocked"),
    ("block list", "blocked"),
    ("spamhaus", "blocked"),
    ("reputation", "blocked"),
    ("dmarc", "blocked"),
    ("blocked", "blocked"),
    ("policy", "blocked"),
    ("spam", "blocked"),
    ("user unknown", "unreachable"),
    ("unknown user", "unreachable"),
    ("no such user", "unreachable"),
    ("does not exist", "unreachable"),
    ("doesn't exist", "unreachable"),
    ("invalid recipient", "unreachable"),
    ("recipient address rejected", "unreachable"),
    ("mailbox unavailable", "unreachable"),
    ("mailbox full", "unreachable"),
    ("over quota", "unreachable"),
    ("quota exceeded", "unreachable"),
    ("too many", "rate_limited"),
    ("rate limit", "rate_limited"),
    ("expired", "expired"),
)
# Basic SMTP reply codes, the last resort (550 alone is ambiguous, but mostly "no mailbox").
BASIC_CODES: dict[str, str] = {
    "550": "unreachable",
    "551": "unreachable",
    "552": "unreachable",
    "553": "unreachable",
    "554": "blocked",
}


def _check() -> None:
    used = {*ENHANCED_DETAILS.values(), *ENHANCED_SUBJECTS.values(), *BASIC_CODES.values()}
    used |= {category for _, category in KEYWORDS}
    wrong = sorted(used - ERROR_CATEGORIES)
    if wrong:
        raise ValueError(f"email error tables use unknown categories: {wrong}")


_check()


def enhanced_code(*texts: str | None) -> str | None:
    """The first RFC 3463 status code (`5.1.1`) found in `texts`, if any."""
    for value in texts:
        if isinstance(value, str):
            match = _ENHANCED_RE.search(value[:2048])
            if match:
                return match.group(0)
    return None


def classify(*texts: str | None) -> str | None:
    """The category `texts` (status codes, diagnostic lines) point at, or None."""
    candidates = [value[:2048] for value in texts if isinstance(value, str) and value]
    for value in candidates:
        match = _ENHANCED_RE.search(value)
        if match:
            subject, detail = int(match.group(2)), int(match.group(3))
            category = ENHANCED_DETAILS.get((subject, detail)) or ENHANCED_SUBJECTS.get(subject)
            if category:
                return category
    lowered = " ".join(candidates).lower()
    for word, category in KEYWORDS:
        if word in lowered:
            return category
    for value in candidates:
        match = _BASIC_RE.search(value)
        if match and match.group(1) in BASIC_CODES:
            return BASIC_CODES[match.group(1)]
    return None
