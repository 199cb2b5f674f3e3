"""Sections of docs/ that commands write, so that the docs cannot drift from the
code and the saved results (`make docs`, `python -m bench --render-only`,
`python -m reliability.battery --render-only`). A leaf: it imports the programs whose
sections it renders, and nothing imports it (they write through harness.markers)."""
