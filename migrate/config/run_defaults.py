"""What a run uses where no flag says: the provider preset's defaults, else ours.

Presets (``profiles/*.toml``) know things a user should not have to: how
many connections a provider tolerates, how fast it lets a client pull, which
folders are views of others. A flag always wins; a flag that goes beyond a
documented limit is obeyed but warned about, because the user may know better
(a business plan, a raised quota) and a backup tool must not second-guess a
deliberate choice silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from migrate.config.endpoints import Endpoint
from migrate.config.profiles import Profile, get_profile, profile_for_host


@dataclass(frozen=True)
class RunDefaults:
    """The settings of one run after presets and flags are combined."""

    connections: int = 1
    rate: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    #: One line per preset default that was applied, for the user to see.
    notes: tuple[str, ...] = field(default=())
    #: The preset these came from (its folder names also shape the mapping).
    profile: Profile | None = None


def preset_of(endpoint: Endpoint) -> Profile | None:
    """The preset that describes ``endpoint``'s server, if any."""
    if endpoint.provider:
        return get_profile(endpoint.provider)
    return profile_for_host(endpoint.host)


def resolve(endpoint: Endpoint, *, connections: int | None = None, rate: str | None = None,
            include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
            warn: Callable[[str], None] = lambda _: None) -> RunDefaults:
    """Combine ``endpoint``'s preset with the flags given (None: not given)."""
    profile = preset_of(endpoint)
    notes: list[str] = []
    if profile is None:
        return RunDefaults(connections=connections or 1, rate=rate,
                           include=tuple(include or ()), exclude=tuple(exclude or ()))
    cap = profile.limits.get("max_connections")
    if connections is None:
        connections = profile.connections or 1
        if connections > 1:
            notes.append(f"{profile.name}: {connections} connections (preset; --max-connections "
                         "to change)")
    elif cap is not None and connections > cap:
        warn(f"--max-connections {connections} is above {profile.name}'s documented cap of "
             f"{cap}; the server may refuse or throttle the extra connections")
    if rate is None and profile.rate:
        rate = profile.rate
        notes.append(f"{profile.name}: at most {rate}/s (preset; --rate to change)")
    # Preset exclusions are views of other folders (never the only copy of a
    # message); any --folder or --exclude means the user chose, so they go.
    chosen_exclude = tuple(exclude or ())
    if not include and not exclude and profile.exclude:
        chosen_exclude = profile.exclude
        notes.append(f"{profile.name}: skipping {', '.join(profile.exclude)} (preset; "
                     "--folder or --exclude to choose yourself)")
    return RunDefaults(connections=connections, rate=rate, include=tuple(include or ()),
                       exclude=chosen_exclude, notes=tuple(notes), profile=profile)


__all__ = ["RunDefaults", "preset_of", "resolve"]
