"""Alerts: a run that ends `partial` or `failed` sends one message (webhook and/or e-mail)
with its counts and report path. Sending never fails the run: a problem is returned."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import httpx

from p2c_etl.config import AlertSettings
from p2c_etl.model.summary import RunSummary


def alert_text(summary: RunSummary) -> str:
    lines = [f"p2c-etl {summary.mode} {summary.run_id} ended {summary.status}."]
    if summary.error:
        lines.append(f"Error: {summary.error}")
    for c in summary.flows:
        if c.rejected or c.failed:
            lines.append(
                f"- {c.flow}: {c.rejected} rejected, {c.failed} failed "
                f"({c.inserted} inserted, {c.updated} updated of {c.source_rows})"
            )
    lines.append(f"Report: {summary.report_html}")
    return "\n".join(lines)


def send_alerts(alerts: AlertSettings, summary: RunSummary, timeout: float = 15.0) -> list[str]:
    """Send the alert of `summary` if it ended partial or failed; the problems, if any."""
    if summary.status not in ("partial", "failed"):
        return []
    text, problems = alert_text(summary), []
    if alerts.webhook:
        try:
            response = httpx.post(
                alerts.webhook, json={"text": text, "run": summary.as_json()}, timeout=timeout
            )
            if response.is_error:
                problems.append(f"webhook answered HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            problems.append(f"webhook unreachable: {type(exc).__name__}")
    if alerts.smtp_host:
        try:
            _mail(alerts, summary, text, timeout)
        except (OSError, smtplib.SMTPException) as exc:
            problems.append(f"mail not sent: {type(exc).__name__}: {exc}")
    return problems


def _mail(alerts: AlertSettings, summary: RunSummary, text: str, timeout: float) -> None:
    assert alerts.smtp_host and alerts.smtp_from
    message = EmailMessage()
    message["Subject"] = f"p2c-etl {summary.mode} {summary.run_id}: {summary.status}"
    message["From"], message["To"] = alerts.smtp_from, ", ".join(alerts.smtp_to)
    message.set_content(text)
    with smtplib.SMTP(alerts.smtp_host, alerts.smtp_port, timeout=timeout) as smtp:
        if alerts.smtp_starttls:
            smtp.starttls()
        if alerts.smtp_user and alerts.smtp_password:
            smtp.login(alerts.smtp_user, alerts.smtp_password.reveal())
        smtp.send_message(message)
