"""Prompt similarity from two embedding vectors, as a score in 0..1.

Each method's raw value is mapped to 0..1 (1 = identical) so one threshold
works for every method:

| method      | raw value                  | score                              |
|-------------|----------------------------|------------------------------------|
| cosine      | cos(a, b) in [-1, 1]       | max(0, cos): opposite or unrelated prompts score 0, and a threshold tuned on raw cosine similarity keeps its meaning |
| dot_product | a . b, unbounded           | logistic 1 / (1 + e^-(a.b)); for unit vectors this is monotone in cosine |
| euclidean   | ||a - b||_2 >= 0           | 1 / (1 + distance)                 |
| manhattan   | ||a - b||_1 >= 0           | 1 / (1 + distance)                 |

Distances are scale-dependent: compare embeddings of one model, normalised
the same way.
"""

import math

from synthralos_lib.state.validation import check_numbers

METHODS = ("cosine", "euclidean", "dot_product", "manhattan")


class SimilarityError(ValueError):
    pass


def _vectors(a, b):
    if not isinstance(a, (list, tuple)) or not isinstance(b, (list, tuple)):
        raise SimilarityError("vectors must be arrays of numbers")
    if not a or len(a) != len(b):
        raise SimilarityError("vectors must be non-empty and of equal length (got %d and %d)" % (len(a), len(b)))
    try:
        return [[float(x) for x in check_numbers(vector, name)] for vector, name in ((a, "vector_a"), (b, "vector_b"))]
    except ValueError as exc:
        raise SimilarityError(str(exc))


def raw(method, a, b):
    """The method's raw value (cosine, dot product or distance)."""
    a, b = _vectors(a, b)
    if method == "cosine":
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        if norm == 0:
            raise SimilarityError("cosine similarity is undefined for a zero vector")
        return max(-1.0, min(1.0, sum(x * y for x, y in zip(a, b)) / norm))
    if method == "dot_product":
        return sum(x * y for x, y in zip(a, b))
    if method == "euclidean":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    if method == "manhattan":
        return sum(abs(x - y) for x, y in zip(a, b))
    raise SimilarityError("method must be one of %s" % ", ".join(METHODS))


def score(method, a, b):
    """Similarity in 0..1 (see the table in the module doc)."""
    value = raw(method, a, b)
    if method == "cosine":
        return max(0.0, value)
    if method == "dot_product":
        # Numerically safe logistic.
        if value >= 0:
            return 1.0 / (1.0 + math.exp(-value))
        e = math.exp(value)
        return e / (1.0 + e)
    return 1.0 / (1.0 + value)
