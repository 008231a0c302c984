"""Helpers shared by the benchmark scripts."""
from __future__ import annotations


def markdown_table(title, columns, rows) -> str:
    """Markdown table; `columns` are (header, key, format) triples, `rows` dicts."""
    lines = [title, "| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for _, key, fmt in columns) + " |")
    return "\n".join(lines)
