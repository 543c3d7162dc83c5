"""Where each source folder goes on an IMAP destination.

Restore and copy write into a server whose folder names are not the
source's: the Sent folder is "Gesendet" on one and "Sent Items" on the
other, the delimiter is '/' on one and '.' on the other, and a level like
"v1.2" cannot exist as one level on a '.' server. This module decides, once
per run and predictably, the destination folder of every source folder:

1. ``--map SRC=DST`` rules, first match wins. ``*`` globs; each ``*`` in DST
   takes what the corresponding ``*`` in SRC matched. A rule without ``*``
   also covers subfolders ("Work=Job" sends "Work/x" to "Job/x").
2. With ``--prefix P`` every folder (INBOX included) goes under P, keeping
   its source name: the restored tree stays apart from the live one.
3. Otherwise, special-use aware: a source folder marked (or well-known as)
   \\Sent, \\Drafts, \\Trash, \\Junk or \\Archive, and its subfolders, go to
   the destination's folder of the same use, whatever it is called. Where
   the destination has no folder of that use, a provider preset may name the
   one to create ("Gesendet" on a German GMX account); else the source's
   name is kept.
4. The '/'-path is turned into the destination's name: its delimiter between
   levels, its personal namespace prefix (source names are relative to the
   source's, see :mod:`migrate.folders`, so "Archiv/2019" from Cyrus's
   "INBOX.Archiv.2019" lands as "Archiv/2019" on Dovecot and the other way
   round; INBOX stays INBOX), and a level that contains the delimiter gets
   '_' in its place (reported as a rename).

Names stay Unicode here; imapclient does the modified UTF-7 on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import translate

from migrate.errors import UsageError
from migrate.folders import SLASH_STANDIN, split_namespace
from migrate.model import Folder

# The special uses worth mapping: one folder per account has each. \All is Gmail's All
# Mail (every message once), \Important and \Flagged its Important and Starred views:
# they go to the destination's folders of that use where there are some (a Gmail to
# Gmail copy, "[Gmail]/All Mail" to "[Google Mail]/Alle Nachrichten").
MAPPED_USES = ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Important",
               "\\Flagged")

# Names providers and clients give these folders, for servers (and archives)
# that do not announce RFC 6154 attributes. Compared case-insensitively.
# The German ones added with the provider presets are each attested by the
# provider's own help pages or by public client configurations: GMX's trash
# "Gelöscht" and junk "Spamverdacht" (hilfe.gmx.net), Gmail's German
# "[Gmail]/…" and "[Google Mail]/…" folders, Yahoo's "Draft", Dutch
# Outlook's "Verwijderde items" and "Ongewenste e-mail". Names that could be
# an ordinary folder elsewhere ("Unbekannt", "Unerwünscht") stay out: those
# come from a preset's [folders] tables, for that provider only.
WELL_KNOWN: dict[str, tuple[str, ...]] = {
    "\\Sent": ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "[Gmail]/Sent Mail",
               "[Google Mail]/Sent Mail", "[Gmail]/Gesendet", "[Google Mail]/Gesendet",
               "INBOX/Sent", "Gesendet", "Gesendete Objekte",
               "Gesendete Elemente", "Envoyés", "Éléments envoyés", "Enviados", "Inviata",
               "Posta inviata", "Verzonden", "Verzonden items", "Skickat", "Wysłane"),
    "\\Drafts": ("Drafts", "Draft", "[Gmail]/Drafts", "[Google Mail]/Drafts", "[Gmail]/Entwürfe",
                 "[Google Mail]/Entwürfe", "INBOX/Drafts", "Entwürfe",
                 "Brouillons", "Borradores", "Bozze", "Concepten", "Utkast", "Kopie robocze"),
    "\\Trash": ("Trash", "Deleted Items", "Deleted Messages", "Bin", "[Gmail]/Trash",
                "[Gmail]/Bin", "[Google Mail]/Trash", "[Google Mail]/Bin", "[Gmail]/Papierkorb",
                "[Google Mail]/Papierkorb", "INBOX/Trash", "Papierkorb", "Gelöscht",
                "Gelöschte Elemente", "Corbeille", "Papelera", "Cestino", "Prullenbak",
                "Verwijderde items", "Papperskorgen", "Kosz"),
    "\\Junk": ("Junk", "Spam", "Junk E-mail", "Junk Email", "Bulk Mail", "[Gmail]/Spam",
               "[Google Mail]/Spam", "INBOX/Junk", "INBOX/Spam", "Junk-E-Mail", "Spamverdacht",
               "Indésirables", "Ongewenste e-mail"),
    "\\Archive": ("Archive", "Archives", "Archiv", "INBOX/Archive"),
    "\\All": ("[Gmail]/All Mail", "[Google Mail]/All Mail", "[Gmail]/Alle Nachrichten",
               "[Google Mail]/Alle Nachrichten"),
    "\\Important": ("[Gmail]/Important", "[Google Mail]/Important", "[Gmail]/Wichtig",
                     "[Google Mail]/Wichtig"),
    "\\Flagged": ("[Gmail]/Starred", "[Google Mail]/Starred", "[Gmail]/Markiert",
                   "[Google Mail]/Markiert"),
}

# What replaces the destination's delimiter inside one level ("v1.2" -> "v1_2").
DELIMITER_STANDIN = "_"


@dataclass(frozen=True)
class MapRule:
    """One ``--map SRC=DST`` rule."""

    source: str
    target: str

    @classmethod
    def parse(cls, text: str) -> MapRule:
        src, sep, dst = text.partition("=")
        src, dst = src.strip().strip("/"), dst.strip().strip("/")
        if not sep or not src or not dst:
            raise UsageError(f"bad --map {text!r}: expected SRC=DST, e.g. 'Old/*=Archive/Old/*'")
        if dst.count("*") > src.count("*"):
            raise UsageError(f"bad --map {text!r}: DST has more '*' than SRC")
        return cls(src, dst)

    def apply(self, name: str) -> str | None:
        """The mapped name, or None when the rule does not match ``name``."""
        if "*" not in self.source:
            if name == self.source:
                return self.target
            if name.startswith(self.source + "/"):
                return self.target + name[len(self.source):]
            return None
        # fnmatch's translation, but with each '*' captured so DST can reuse it.
        parts = self.source.split("*")
        pattern = "(.*)".join(translate(p)[4:-3] for p in parts)  # strip (?s:…)\Z
        match = re.fullmatch(pattern, name, flags=re.DOTALL)
        if match is None:
            return None
        out = self.target
        for group in match.groups():
            if "*" not in out:
                break
            out = out.replace("*", group, 1)
        return out


@dataclass(frozen=True)
class Target:
    """A source folder's place on the destination.

    ``path`` is the '/'-separated Unicode path, as our archives name folders
    (a level holding a '/' shows it as U+2215); ``server_name`` is what to
    CREATE/SELECT/APPEND to. ``note`` says why a level had to be renamed.
    """

    source: str
    path: str
    server_name: str
    special_use: str | None = None
    note: str | None = None


def special_use_by_name(name: str) -> str | None:
    """The special use a folder's name suggests (no attribute given)."""
    lowered = name.casefold()
    for use, names in WELL_KNOWN.items():
        if any(lowered == n.casefold() for n in names):
            return use
    return None


def source_use(folder: Folder) -> str | None:
    """A source folder's mapped special use: its attribute, else its well-known name."""
    if folder.special_use in MAPPED_USES:
        return folder.special_use
    if folder.special_use is None:
        return special_use_by_name(folder.name)
    return None


class FolderMapper:
    """Maps source folder paths to destination names for one run.

    ``extra_names`` ({use: names}) adds names to recognise a folder's use by,
    on both sides, for servers that announce no attributes; a provider
    preset's ``Profile.special_names()`` is meant here, and its names win over
    WELL_KNOWN where the two disagree. ``create_names`` ({use: name}) is where
    a source folder of a use the destination lacks goes instead of its own
    name (``Profile.names_for_language(...)`` of the destination's preset).
    Both only act where special-use mapping does: ``--map`` rules come first,
    and ``--prefix`` or ``special_use=False`` turn them off.
    """

    def __init__(
        self,
        dest_folders: Iterable[Folder],
        delimiter: str | None,
        rules: Sequence[MapRule] = (),
        prefix: str = "",
        special_use: bool = True,
        namespace_prefix: str = "",
        *,
        extra_names: Mapping[str, Sequence[str]] | None = None,
        create_names: Mapping[str, str] | None = None,
    ) -> None:
        self.delimiter = delimiter or "/"
        self.rules = list(rules)
        self.prefix = prefix.strip("/")
        self.special_use = special_use and not self.prefix
        self.namespace_prefix = namespace_prefix
        self._use_of_name: dict[str, str] = {
            name.casefold(): use for use, names in WELL_KNOWN.items() for name in names}
        for use, names in (extra_names or {}).items():
            if use in MAPPED_USES:
                self._use_of_name.update({name.strip("/").casefold(): use for name in names})
        self.create_names: dict[str, str] = {
            use: name.strip("/") for use, name in (create_names or {}).items()
            if use in MAPPED_USES and name.strip("/")}
        folders = list(dest_folders)
        # The destination's folder per use: an attribute beats a well-known name.
        self.dest_use: dict[str, str] = {}
        for f in folders:
            if f.special_use in MAPPED_USES and f.selectable:
                self.dest_use.setdefault(f.special_use, self._strip_namespace(f.name))
        for f in folders:
            # A preset may name the folder with its namespace ("INBOX/Gesendet") or without.
            named = self.use_by_name(f.name) or self.use_by_name(self._strip_namespace(f.name))
            if named and f.selectable and f.special_use is None:
                self.dest_use.setdefault(named, self._strip_namespace(f.name))

    def use_by_name(self, name: str) -> str | None:
        """The special use ``name`` suggests: WELL_KNOWN plus this run's extra names."""
        return self._use_of_name.get(name.casefold())

    def _strip_namespace(self, name: str) -> str:
        ns = self.namespace_prefix.rstrip(self.delimiter)
        if ns and name.startswith(ns + "/"):
            return name[len(ns) + 1:]
        return name

    def _source_uses(self, folders: Sequence[Folder]) -> dict[str, str]:
        """{source path: use} for the source folders that carry a mapped use."""
        out: dict[str, str] = {}
        taken: set[str] = set()
        # Attributes first, then names, one folder per use (a second "Sent"
        # lookalike stays an ordinary folder).
        for by_attr in (True, False):
            for f in folders:
                use = f.special_use if by_attr else (
                    self.use_by_name(f.name) if f.special_use is None else None)
                if use in MAPPED_USES and use not in taken and f.name not in out:
                    out[f.name] = use
                    taken.add(use)
        return out

    def map_all(self, folders: Sequence[Folder]) -> dict[str, Target]:
        """{source path: Target} for every source folder."""
        uses = self._source_uses(folders) if self.special_use else {}
        return {f.name: self.map_name(f.name, uses) for f in folders}

    def map_name(self, name: str, uses: dict[str, str] | None = None) -> Target:
        uses = uses or {}
        mapped: str | None = None
        use: str | None = None
        for rule in self.rules:
            mapped = rule.apply(name)
            if mapped is not None:
                break
        if mapped is None:
            mapped = name
            if self.prefix:
                mapped = f"{self.prefix}/{name}"
            elif name.upper() == "INBOX":
                mapped = "INBOX"
            else:
                # The nearest folder (itself or a parent) with a use the destination
                # has, or, failing that, one the preset says how to create.
                parts = name.split("/")
                for i in range(len(parts), 0, -1):
                    head = "/".join(parts[:i])
                    head_use = uses.get(head)
                    target = (self.dest_use.get(head_use) or self.create_names.get(head_use)
                              if head_use else None)
                    if target:
                        mapped = "/".join([target, *parts[i:]])
                        use = head_use if i == len(parts) else None
                        break
        return self._to_server(name, mapped, use)

    def _to_server(self, source: str, path: str, use: str | None) -> Target:
        d = self.delimiter
        levels = [lvl for lvl in path.split("/")]
        out: list[str] = []
        notes: list[str] = []
        for level in levels:
            if d != "/":
                level = level.replace(SLASH_STANDIN, "/")
            if not level:
                level = DELIMITER_STANDIN
                notes.append("an empty level became '_'")
            if d in level and d != "/":
                fixed = level.replace(d, DELIMITER_STANDIN)
                notes.append(f"level {level!r} contains the destination's delimiter {d!r}: "
                             f"created as {fixed!r}")
                level = fixed
            out.append(level)
        server = d.join(out)
        if self.namespace_prefix and server.upper() != "INBOX" and not server.startswith(
                self.namespace_prefix):
            server = self.namespace_prefix + server
        # The path is relative to the destination's namespace, as its listing names it.
        relative = split_namespace(server, self.namespace_prefix)[0]
        path_out = "/".join(part.replace("/", SLASH_STANDIN) for part in relative.split(d)) \
            if d != "/" else relative
        return Target(source=source, path=path_out, server_name=server, special_use=use,
                      note="; ".join(notes) or None)


def parse_rules(texts: Sequence[str] | None) -> list[MapRule]:
    return [MapRule.parse(t) for t in texts or ()]


__all__ = ["MAPPED_USES", "WELL_KNOWN", "FolderMapper", "MapRule", "Target", "parse_rules",
           "source_use", "special_use_by_name"]
