"""The device-type templates (<name>.jinja2) and health checks (health-checks/<name>.yaml) dutlab
ships, as package data: `dutlab.service.templating.shipped_device_types_dir` finds this folder."""
