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


def span(seconds: float) -> str:
    """A duration as people say it: "40 min", "1 h 5 min", "2 d 3 h"."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)} s"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago(seconds: float) -> str:
    return "just now" if seconds < 60 else f"{span(seconds)} ago"


def clock(ts: float, now: float | None = None) -> str:
    """ "13:05 UTC", with the date when it is not the same day as `now`."""
    moment = datetime.fromtimestamp(ts, UTC)
    text = moment.strftime("%H:%M UTC")
    if now is not None and moment.date() != datetime.fromtimestamp(now, UTC).date():
        text += f" on {moment.day} {moment.strftime('%b')}"
    return text


def when(ts: float, now: float) -> str:
    """ "13:05 UTC (40 min ago)": absolute for the record, relative for the reader."""
    return f"{clock(ts, now)} ({ago(now - ts)})"
