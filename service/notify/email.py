"""Mail with the standard library: SMTP (plain, STARTTLS or TLS, with or without login) or a
sendmail command, as the `email:` settings say (docs/notifications.md)."""

from __future__ import annotations

import shlex
import smtplib
import ssl
import subprocess
from email.message import EmailMessage
from email.utils import formatdate

from ..config import EmailSettings
from .rows import DeliveryError


def configured(settings: EmailSettings) -> bool:
    return bool(settings.host or settings.sendmail)


def build(settings: EmailSettings, to: str, subject: str, body: str, message_id: str,
          headers: dict[str, str] | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    # the same id on every attempt: a duplicate after a crash is recognisable as one
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg


def send(settings: EmailSettings, msg: EmailMessage) -> None:
    """Hand `msg` to the MTA; a DeliveryError says what failed (permanent: a refused recipient)."""
    if settings.sendmail:
        _sendmail(settings, msg)
        return
    if not settings.host:
        raise DeliveryError("email is not configured on this server (set email.host or email.sendmail)",
                            permanent=True)
    where = f"SMTP server {settings.host}:{settings.port}"
    try:
        if settings.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with smtp:
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, settings.password)
            smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = "; ".join(f"{addr}: {code} {text.decode(errors='replace')}"
                          for addr, (code, text) in exc.recipients.items())
        raise DeliveryError(f"{where} refused the recipient: {codes}", permanent=True) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{where} refused the login of '{settings.username}': {exc.smtp_code} "
                            f"{exc.smtp_error.decode(errors='replace')}; check email.username/password") from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        raise DeliveryError(f"{where} answered {exc.smtp_code} {text}", permanent=500 <= exc.smtp_code < 600) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{where}: {exc or type(exc).__name__}") from None


def _sendmail(settings: EmailSettings, msg: EmailMessage) -> None:
    argv = shlex.split(settings.sendmail)
    try:
        proc = subprocess.run(argv, input=msg.as_bytes(), capture_output=True, timeout=settings.timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeliveryError(f"email.sendmail command {settings.sendmail!r}: {exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise DeliveryError(f"email.sendmail command {settings.sendmail!r} exited {proc.returncode}: {err}")
