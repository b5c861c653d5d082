"""Context beyond the current file (issue #23): what of the workspace goes ahead of the prefix.

Modules, each owning one part: `files` (which files may feed a prompt: privacy and limits),
`chunks` (a file's definitions and line windows), `imports` (a file's imports resolved to
workspace files), `index` (the workspace's definitions, built in the background), `ring` (the
recently edited regions), `rank` and `pack` (pure: the order chunks compete in, and the text
packed by a token budget), `repo` (the state and the one call the completion path makes).
"""

from lsp_server.context.pack import EMPTY, Packed
from lsp_server.context.repo import RepoContext

__all__ = ["EMPTY", "Packed", "RepoContext"]
