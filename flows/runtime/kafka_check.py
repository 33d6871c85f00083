"""Before any work on Kafka: can we reach the cluster and log in with these settings?

Kafka clients retry a refused login or an untrusted certificate until they time out, and
then say little (kafka-python: "Unable to bootstrap"; bytewax's connector may wait for
ever). `check_connection` asks for the cluster's metadata once with librdkafka, which the
flow runs on, and turns what went wrong into one line that names the cluster, the user
and what failed: the password, the certificate, the connection. Never the secret.
"""

import logging
import re
import time
from pathlib import Path

from flows.runtime.settings import KafkaSettings, SettingsError, kafka_timeout_seconds

#: Exit status of a command that cannot reach or log in to Kafka.
EXIT_KAFKA_UNAVAILABLE = 2


class KafkaUnavailable(Exception):
    """Kafka cannot be reached or refuses these settings. The message is one line naming
    the cluster and what failed; it never holds the password."""


_BROKER_PREFIX = re.compile(r"^\S+/(?:bootstrap|\d+): ")
_SUFFIX = re.compile(r"(?: \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\))")
_FAIL_LOG = re.compile(r"^FAIL \[[^\]]*\] \[[^\]]*\]: ")


def _detail(text: str) -> str:
    """A librdkafka message without the broker's address in front and timings behind."""
    return _SUFFIX.sub("", _BROKER_PREFIX.sub("", _FAIL_LOG.sub("", text.strip())))


def _redact(settings: KafkaSettings, text: str) -> str:
    """One line, and never the password, whatever a client library put in its message
    (at the price of a mangled message should the password be a common word)."""
    line = " ".join(text.split())
    password = settings.security.get("KAFKA_SASL_PASSWORD")
    return line.replace(password, "***") if password else line


def unavailable(settings: KafkaSettings, what: str) -> KafkaUnavailable:
    """The error for `what` went wrong with the cluster of `settings`."""
    return KafkaUnavailable(_redact(settings, f"Kafka at {settings.bootstrap_servers}: {what}"))


def _login(settings: KafkaSettings) -> str:
    """How we log in, for messages: protocol, mechanism and user (never the password)."""
    security = settings.security
    protocol = security.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    parts = [protocol]
    if "SASL" in protocol:
        parts.append(security.get("KAFKA_SASL_MECHANISM", "GSSAPI"))
        if "KAFKA_SASL_USERNAME" in security:
            parts.append(f"user {security['KAFKA_SASL_USERNAME']!r}")
    return ", ".join(parts)


def _authentication_failed(settings: KafkaSettings, detail: str) -> KafkaUnavailable:
    return unavailable(
        settings,
        f"authentication failed ({_login(settings)}): {detail}; "
        "check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM",
    )


def _tls_failed(settings: KafkaSettings, detail: str) -> KafkaUnavailable:
    ca = settings.security.get("KAFKA_SSL_CA_LOCATION")
    trusted_by = f"KAFKA_SSL_CA_LOCATION={ca}" if ca else "the system's CA certificates"
    if "certificate verify failed" in detail:
        return unavailable(
            settings,
            f"TLS handshake failed: the broker's certificate is not trusted by {trusted_by} "
            "(certificate verify failed); set KAFKA_SSL_CA_LOCATION to the CA that signed it",
        )
    return unavailable(settings, f"TLS handshake failed ({trusted_by}): {detail}")


def _check_files(settings: KafkaSettings) -> None:
    """Certificate and key files must exist: a missing one otherwise reads as a TLS error."""
    for name, value in settings.security.items():
        if name.endswith("_LOCATION") and not Path(value).is_file():
            raise SettingsError(f"{name}={value}: no such file")


def check_connection(settings: KafkaSettings, timeout: float | None = None) -> None:
    """Raise KafkaUnavailable unless the cluster answers a metadata request with these
    settings within `timeout` seconds (WAYFINDER_KAFKA_TIMEOUT when not given).

    A refused login or an untrusted certificate fails at once; a cluster that does not
    answer (down, starting, wrong port or protocol) is tried until the timeout.
    """
    # Here, not at the top: the CLI's error handler imports this module for every command.
    from confluent_kafka import KafkaError, KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    _check_files(settings)
    if timeout is None:
        timeout = kafka_timeout_seconds()
    errors: list[KafkaError] = []
    failures: list[str] = []  # librdkafka's FAIL log lines: why a connection dropped

    class Failures(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("FAIL "):
                failures.append(message)

    # librdkafka logs to stderr unless given a logger: keep its lines for the message, and
    # drop any that come later (without a handler, Python would print them to stderr).
    log = logging.getLogger(f"{__name__}.librdkafka")
    log.propagate = False
    log.setLevel(logging.INFO)
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    handler = Failures()
    log.addHandler(handler)
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": settings.bootstrap_servers,
        **settings.librdkafka_config(),
    }
    try:
        try:
            admin = AdminClient(config, error_cb=errors.append, logger=log)
        except KafkaException as exc:  # a setting librdkafka refuses
            error = exc.args[0]
            detail = error.str() if isinstance(error, KafkaError) else str(exc)
            raise unavailable(settings, f"the client settings are refused: {detail}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                admin.list_topics(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))
                return
            except KafkaException:
                pass
            admin.poll(0)  # serves error_cb and the logger
            for error in errors:
                detail = _detail(error.str())
                if error.code() == KafkaError._AUTHENTICATION:
                    raise _authentication_failed(settings, detail)
                if error.code() == KafkaError._SSL or "SSL handshake failed" in detail:
                    raise _tls_failed(settings, detail)
            if time.monotonic() >= deadline:
                break
    finally:
        log.removeHandler(handler)
    reasons = [_detail(e.str()) for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
    reasons += [_detail(line) for line in failures]
    why = f": {reasons[-1]}" if reasons else ""
    hint = ""
    if any("connection closed by peer" in r for r in reasons):
        hint = f" (is KAFKA_SECURITY_PROTOCOL right? this client speaks {_login(settings)})"
    elif not reasons or all("Connection refused" in r for r in reasons):
        hint = (
            " (no broker there: start a local one with `make kafka-up`, or set "
            "KAFKA_BOOTSTRAP_SERVERS)"
        )
    raise unavailable(settings, f"no answer within {timeout:g} s{why}{hint}")


def explain(settings: KafkaSettings, error: Exception, doing: str) -> KafkaUnavailable:
    """The error for a Kafka client that failed while `doing` something: what a check of the
    connection finds (a refused login, an untrusted certificate), else the client's words."""
    try:
        check_connection(settings, timeout=5.0)
    except KafkaUnavailable as found:
        return found
    return unavailable(settings, f"{doing} failed: {error!r}")
