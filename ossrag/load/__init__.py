"""Stage 1, load: find the files under a folder and turn each into a `Document` (text, format,
hash). Interface: `files.discover`, `files.load`; `formats` registers PDF, HTML, DOCX, notebooks
and code with `registry.register_loader`."""
