"""How decisions speak: channel names and times in words a marketer or agent reads."""

from datetime import UTC, datetime

_CHANNEL_NAMES = {
    "ivr": "IVR",
    "sms": "SMS",
    "call_centre": "call centre",
    "app": "app",
    "web": "web",
}


def channel_name(channel: str) -> str:
    return _CHANNEL_NAMES.get(channel, channel.replace("_", " "))


def channel_list(channels: list[str]) -> str:
    """ "web", "web and IVR", "web, app and IVR"."""
    names = [channel_name(c) for c in channels]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"


def clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M UTC")


def when(ts: float, now: float) -> str:
    """ "13:05 UTC (40 min ago)": absolute for the record, relative for the reader."""
    return f"{clock(ts)} ({ago(now - ts)})"
