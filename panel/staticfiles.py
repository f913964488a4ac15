"""Static files: hashed and compressed once collected, served as they are before.

``collectstatic`` (``make run`` and the deployment units run it) writes each file under a name
with its content's hash plus gzip/brotli copies, and whitenoise serves those with a year of
caching: a new release changes the names, so browsers never keep an old panel.js. Before
``collectstatic`` has run (tests, ``runserver`` in a fresh checkout) there is no manifest: the
files keep their names and whitenoise serves them from the source folders, briefly cached,
instead of every page failing on a missing manifest.
"""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class PanelStaticFilesStorage(CompressedManifestStaticFilesStorage):
    def stored_name(self, name: str) -> str:
        if not self.hashed_files:  # no manifest: not collected here
            return name
        return super().stored_name(name)
