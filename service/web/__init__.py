"""The lab in a browser (docs/web-ui.md): server-rendered pages, a login, admin actions.

    sessions   the session cookie (signed with the secret key, the key hashed in web_session), CSRF
    plugin     WebRoutes: every page route gets WebPlugin (the session's user, CSRF on POST, errors
               as HTML pages); render(): Jinja2 templates (templates/) with the page's common context
    overview   /: devices online/offline/Bad, the queue per device type, workers, recent failures
    accounts   /accounts/login/ (local and LDAP users), /accounts/logout/
    jobs       the job list (filters, pages), the job page (results, the log viewer), raw texts, the
               log's new lines for the live follow, cancel and resubmit
    devices    the device list and page (health history, jobs, dictionary for those allowed), set health
    lab        device types and workers, a worker's health
    static     /static/dutlab.css and /static/dutlab.js (the only script: the log's live follow)

Pages read through the domain (`lab/`) and its batch shapes (`job_views.jobs_json`,
`devices.devices_json`), so every list costs a fixed number of queries whatever its length.
"""

from __future__ import annotations
