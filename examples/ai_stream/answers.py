"""A deterministic stand-in for a language model: the same question always gets the same answer.

``answer_tokens(question)`` returns the answer as a list of tokens (word pieces with their
spaces, like a model's output), and ``"".join(answer_tokens(q))`` is the full text. The
example streams these tokens at a model-like pace; wire your model's token iterator in the
same place (``jobs.py``) and nothing else changes.
"""

from __future__ import annotations

import hashlib
import re

OPENINGS = [
    "Good question. Here is how I would think about \u201c{topic}\u201d.",
    "You asked \u201c{topic}\u201d. Let me break it down into a few steps.",
    "Short answer to \u201c{topic}\u201d: it depends, but a few patterns come up again and again.",
]
POINTS = [
    "Start with the simplest thing that works: one connection per browser tab, one channel per "
    "conversation, and a server that publishes every event exactly once.",
    "Give every message a position in a stream. When a client reconnects it says where it stopped, "
    "and the server sends only what came after, so nothing is lost and nothing is repeated.",
    "Keep the slow work off the connection: a background job produces the result and publishes it "
    "piece by piece, and the page renders each piece the moment it arrives.",
    "Let the user change their mind. A cancel request should stop the job at once and tell every "
    "open page that the answer ended early.",
    "Bound everything: how many jobs one user may run, how long a stream is kept, how many tokens "
    "an answer may have. Limits are what keep a busy afternoon from becoming an outage.",
    "Measure what the user feels, the time from a token being produced to it being on the screen, "
    "rather than what the server finds easy to count.",
    "Treat the network as unreliable. Phones switch towers, laptops sleep, and Wi-Fi drops for a "
    "second at the worst moment; resuming from the last position makes all of that invisible.",
    "Authorize at the channel: a job's stream belongs to the person who asked, and nobody else "
    "can subscribe to it, even if they guess its name.",
]
CLOSINGS = [
    "That is the whole pattern; the rest is your model and your product.",
    "If you remember one thing: positions, not timestamps, decide what a client has seen.",
    "Try closing the lid halfway through this answer: it picks up where it left off.",
]
WORD = re.compile(r"\S+\s*")
TOPIC = re.compile(r"[^\w\s'-]+")
MAX_QUESTION = 500  # characters kept from a question


def topic_of(question: str) -> str:
    """The question, tidied into a phrase for the answer ("your question" when empty)."""
    words = TOPIC.sub(" ", question[:MAX_QUESTION]).split()
    return " ".join(words[:12]) if words else "your question"


def answer_text(question: str) -> str:
    """The full answer: an opening, four points chosen by the question's hash, a closing."""
    digest = hashlib.sha256(question.strip().lower().encode()).digest()
    opening = OPENINGS[digest[0] % len(OPENINGS)].format(topic=topic_of(question))
    order = sorted(range(len(POINTS)), key=lambda i: (digest[1 + i], i))
    points = [f"{n}. {POINTS[i]}" for n, i in enumerate(order[:4], start=1)]
    closing = CLOSINGS[digest[9] % len(CLOSINGS)]
    return "\n\n".join([opening, *points, closing])


def answer_tokens(question: str) -> list[str]:
    """The answer cut into tokens: whole short words, long words in pieces of at most 6 letters."""
    tokens: list[str] = []
    for match in WORD.finditer(answer_text(question)):
        word = match.group()
        while len(word.rstrip()) > 8:
            tokens.append(word[:6])
            word = word[6:]
        tokens.append(word)
    return tokens
