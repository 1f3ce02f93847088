"""Device dictionaries rendered through the shipped device-type templates."""

import pytest
import yaml

from dutlab.service.templating import (
    TemplateError,
    extends_of,
    load_device_config,
    render_device_config,
    shipped_device_types_dir,
)

QEMU_DICT = "{% extends 'qemu.jinja2' %}\n"
SHIPPED = [shipped_device_types_dir()]


def config(dictionary=QEMU_DICT, context=None, search_path=None, hostname="qemu01"):
    return load_device_config(
        dictionary, hostname=hostname, device_type="qemu", context=context, search_path=search_path or SHIPPED
    )


def qemu_parameters(dictionary=QEMU_DICT, **context):
    return config(dictionary, context)["actions"]["boot"]["methods"]["qemu"]["parameters"]


@pytest.mark.parametrize(
    ("arch", "command", "expected_options", "console"),
    [
        ("amd64", "qemu-system-x86_64", ["-cpu max"], "ttyS0,115200"),
        ("x86_64", "qemu-system-x86_64", ["-cpu max"], "ttyS0,115200"),
        ("i386", "qemu-system-i386", ["-cpu core2duo", "-machine pc"], "ttyS0,115200"),
        ("arm64", "qemu-system-aarch64", ["-cpu cortex-a57", "-machine virt"], "ttyAMA0 115200"),
        ("aarch64", "qemu-system-aarch64", ["-cpu cortex-a57", "-machine virt"], "ttyAMA0 115200"),
        ("arm", "qemu-system-arm", ["-cpu cortex-a15", "-machine virt"], "ttyAMA0 115200"),
    ],
)
def test_qemu_per_arch(arch, command, expected_options, console):
    params = qemu_parameters(arch=arch)
    assert params["command"] == command
    assert params["options"][: len(expected_options)] == expected_options
    assert params["boot_options"]["console"] == console
    assert "-nographic" in params["options"]
    assert "-m 512" in params["options"]
    assert "-monitor none" in params["options"]
    assert "-net nic,model=virtio,macaddr=52:54:00:12:34:58 -net user" in params["options"]
    # no KVM on our workers unless the dictionary says so
    assert "-enable-kvm" not in params["options"]
    assert "-cpu host" not in params["options"]


def test_kvm_only_when_the_dictionary_enables_it():
    params = qemu_parameters(QEMU_DICT + "{% set kvm = true %}", arch="amd64")
    assert params["options"][:2] == ["-cpu host", "-enable-kvm"]
    params = qemu_parameters(QEMU_DICT + "{% set enable_kvm = true %}", arch="amd64", no_kvm=True)
    assert "-enable-kvm" not in params["options"]


def test_cpu_machine_and_console_from_context():
    params = qemu_parameters(arch="arm64", cpu="cortex-a72", machine="virt,gic-version=3", boot_console="ttyAMA1")
    assert params["options"][:2] == ["-cpu cortex-a72", "-machine virt,gic-version=3"]
    assert params["boot_options"]["console"] == "ttyAMA1"


def test_no_network_and_extra_options():
    params = qemu_parameters(arch="amd64", no_network=True, extra_options=["-smp", 2])
    assert "-net none" in params["options"]
    assert params["extra"] == ["-smp", 2]


def test_no_arch_gives_no_command():
    assert qemu_parameters()["command"] is None


def test_dictionary_set_beats_job_context():
    # the way admins cap QEMU memory per device
    params = qemu_parameters(QEMU_DICT + "{% set memory = 1024 %}", arch="amd64", memory=4096)
    assert "-m 1024" in params["options"]
    assert "-m 4096" not in params["options"]


def test_job_context_beats_template_default():
    assert "-m 2048" in qemu_parameters(arch="amd64", memory=2048)["options"]
    assert "-m 512" in qemu_parameters(arch="amd64")["options"]


def test_dictionary_default_lets_the_job_override():
    dictionary = QEMU_DICT + "{% set memory = memory | default(1024) %}"
    assert "-m 1024" in qemu_parameters(dictionary, arch="amd64")["options"]
    assert "-m 3072" in qemu_parameters(dictionary, arch="amd64", memory=3072)["options"]


def test_template_literals_cannot_be_overridden():
    dictionary = QEMU_DICT + "{% set nographic = false %}"
    cfg = config(dictionary, {"arch": "amd64", "hostname": "evil", "devicetype": "other"})
    assert cfg["hostname"] == "qemu01"
    assert cfg["devicetype"] == "qemu"
    assert "-nographic" in cfg["actions"]["boot"]["methods"]["qemu"]["parameters"]["options"]
    assert cfg["constants"]["default-shell-prompt"] == "lava-test: # "


def test_lava_dictionary_renders_unchanged():
    dictionary = (
        "{% extends 'qemu.jinja2' %}\n"
        "{% set memory = 1024 %}\n"
        "{% set mac_addr = '52:54:00:12:34:59' %}\n"
        "{% set netdevice = 'user' %}\n"
        "{% set extra_options = ['-smp', 1] %}\n"
    )
    text = render_device_config(
        dictionary, hostname="qemu01", device_type="qemu", context={"arch": "amd64"}, search_path=SHIPPED
    )
    cfg = yaml.safe_load(text)
    params = cfg["actions"]["boot"]["methods"]["qemu"]["parameters"]
    assert "-m 1024" in params["options"]
    assert "-net nic,model=virtio,macaddr=52:54:00:12:34:59 -net user" in params["options"]
    assert params["extra"] == ["-smp", 1]
    assert cfg["hostname"] == "qemu01"
    assert cfg["constants"]["posix"]["lava_test_results_dir"] == "/lava-%s"
    assert cfg["constants"]["shutdown-message"] == "The system is going down for reboot NOW"
    assert cfg["constants"]["kernel-start-message"] == "Linux version [0-9]"
    assert set(cfg["actions"]["boot"]["methods"]) >= {"minimal", "qemu"}
    assert set(cfg["actions"]["deploy"]["methods"]) >= {"tmpfs", "downloads"}
    assert "amd64" in cfg["available_architectures"]
    assert cfg["timeouts"]["actions"]["lava-test-shell"] == {"minutes": 3}
    assert cfg["timeouts"]["connections"]["lava-test-shell"] == {"seconds": 10}
    assert "commands" not in cfg  # QEMU is driven through its stdio


def test_commands_timeouts_and_guestfs_from_dictionary():
    dictionary = QEMU_DICT + (
        "{% set connection_command = 'telnet localhost 7001' %}\n"
        "{% set power_on_command = ['relay on 1', 'sleep 1'] %}\n"
        "{% set power_off_command = 'relay off 1' %}\n"
        "{% set hard_reset_command = 'relay cycle 1' %}\n"
        "{% set user_commands = {'usb_on': {'do': 'usb on', 'undo': 'usb off'}} %}\n"
        "{% set action_timeout_lava_test_shell = 7 %}\n"
        "{% set connection_timeout_lava_test_shell = {'seconds': 90} %}\n"
        "{% set guestfs_interface = 'virtio' %}\n"
    )
    cfg = config(dictionary, {"arch": "amd64"})
    assert cfg["commands"] == {
        "connect": "telnet localhost 7001",
        "hard_reset": "relay cycle 1",
        "power_off": "relay off 1",
        "power_on": ["relay on 1", "sleep 1"],
        "users": {"usb_on": {"do": "usb on", "undo": "usb off"}},
    }
    assert cfg["timeouts"]["actions"]["lava-test-shell"] == {"minutes": 7}
    assert cfg["timeouts"]["connections"]["lava-test-shell"] == {"seconds": 90}
    assert cfg["actions"]["deploy"]["methods"]["tmpfs"]["parameters"]["guest"]["interface"] == "virtio"


def test_guestfs_interface_follows_arch():
    guest = config(context={"arch": "amd64"})["actions"]["deploy"]["methods"]["image"]["parameters"]["guest"]
    assert guest == {"size": 512, "interface": "ide", "driveid": "lavatest"}
    guest = config(context={"arch": "arm64"})["actions"]["deploy"]["methods"]["image"]["parameters"]["guest"]
    assert guest["interface"] == "virtio"


def test_context_values_cannot_inject_yaml():
    cfg = config(context={"arch": "amd64", "memory": "512\nhostname: evil", "boot_root": "/dev/sda: x"})
    params = cfg["actions"]["boot"]["methods"]["qemu"]["parameters"]
    assert "-m 512\nhostname: evil" in params["options"]
    assert params["boot_options"]["root"] == "/dev/sda: x"
    assert cfg["hostname"] == "qemu01"


def test_filters():
    dictionary = (
        "{% extends 'base.jinja2' %}{% block body %}"
        "quoted: {{ \"it's; rm -rf /\" | shlex_quote | yaml_quote }}\n"
        "iface: {{ 'x86_64' | qemu_guest_fs_interface(none) }}\n"
        "{% endblock %}"
    )
    cfg = config(dictionary)
    assert cfg["quoted"] == "'it'\"'\"'s; rm -rf /'"
    assert cfg["iface"] == "ide"


def test_extends_of():
    assert extends_of(QEMU_DICT) == "qemu"
    assert extends_of("{# comment #}\n{% extends \"base.jinja2\" %}{% set x = 1 %}") == "base"
    assert extends_of("{% set memory = 1024 %}") is None


def test_broken_dictionary_names_template_and_line():
    dictionary = QEMU_DICT + "{% set memory = 1024 %}\n{% set mac_addr = '52:54' }\n"
    with pytest.raises(TemplateError) as info:
        config(dictionary)
    assert info.value.template == "qemu01.jinja2"
    assert info.value.line == 3
    assert str(info.value).startswith("qemu01.jinja2 line 3: ")


def test_runtime_error_names_template_and_line():
    dictionary = QEMU_DICT + "{% set memory = 1024 %}\n{% set x = memory.nope.deeper %}\n"
    with pytest.raises(TemplateError) as info:
        config(dictionary)
    assert (info.value.template, info.value.line) == ("qemu01.jinja2", 3)
    assert "has no attribute 'nope'" in info.value.message


def test_missing_template_is_named():
    with pytest.raises(TemplateError) as info:
        config("{% extends 'qemuu.jinja2' %}")
    assert info.value.line == 1
    assert "'qemuu.jinja2' not found" in info.value.message


def test_sandbox_blocks_python_internals():
    with pytest.raises(TemplateError) as info:
        config(QEMU_DICT + "{% set x = ''.__class__.__mro__ %}")
    assert info.value.template == "qemu01.jinja2"


def test_invalid_yaml_output_names_rendered_line():
    dictionary = "{% extends 'base.jinja2' %}{% block body %}bad: [unclosed\n{% endblock %}"
    with pytest.raises(TemplateError) as info:
        config(dictionary)
    assert info.value.template == "qemu01.jinja2 (rendered)"
    assert info.value.line is not None


def test_admin_override_directory_is_searched_first(tmp_path):
    (tmp_path / "qemu.jinja2").write_text(
        "{% extends 'base.jinja2' %}{% block body %}site: override\n{% endblock %}"
    )
    cfg = config(search_path=[tmp_path, *SHIPPED])
    assert cfg["site"] == "override"
    assert cfg["hostname"] == "qemu01"  # base.jinja2 still comes from the shipped folder
    assert "site" not in config(search_path=[*SHIPPED, tmp_path])


def test_device_named_like_its_device_type():
    cfg = config(hostname="qemu", context={"arch": "amd64"})
    assert cfg["hostname"] == "qemu"


def test_shipped_dir_has_templates_and_health_check():
    folder = shipped_device_types_dir()
    assert (folder / "base.jinja2").is_file()
    assert (folder / "qemu.jinja2").is_file()
    assert (folder / "health-checks" / "qemu.yaml").is_file()


def test_device_named_like_a_parent_template():
    cfg = config(hostname="base", context={"arch": "arm64"})
    assert cfg["hostname"] == "base"
    assert cfg["actions"]["boot"]["methods"]["qemu"]["parameters"]["command"] == "qemu-system-aarch64"


def test_yaml_quote_writes_what_pyyaml_writes():
    # printable ASCII takes a fast path; it must be the very text PyYAML writes (and loads back)
    import random
    import string

    from dutlab.service.templating import yaml_quote

    rng = random.Random(17)
    samples = ["", "yes", "1024", "a: b", 'say "hi"', "back\\slash", "- x", "~", "null", "#c", "é", "tab\tx",
               "new\nline", "\x7f", "😀"]
    samples += ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    for value in samples + [0, -7, 10**20, True, False, None, 1.5, [1, "a"], {"k": "v"}]:
        if isinstance(value, str):
            expected = yaml.safe_dump(value, default_style='"', width=float("inf")).rstrip("\n")
        elif value is None:
            expected = "null"
        else:
            expected = yaml.safe_dump(value, default_flow_style=True, width=float("inf")).removesuffix("\n...\n")
            expected = expected.rstrip("\n")
        assert yaml_quote(value) == expected, value
        assert yaml.safe_load(f"k: {yaml_quote(value)}") == {"k": value}


def test_shared_templates_follow_the_folders_state(tmp_path):
    """With a `state` the environment and the compiled dictionary are reused; a new state (a
    template edited or added) is rendered from the files as they are now."""
    def render(dictionary=QEMU_DICT, hostname="qemu01", state=("s", 1)):
        return render_device_config(dictionary, hostname=hostname, device_type="qemu", context={"arch": "amd64"},
                                    search_path=[tmp_path, *SHIPPED], state=state)

    fresh = render(state=None)
    assert render() == fresh and render() == fresh
    assert yaml.safe_load(render(hostname="qemu02"))["hostname"] == "qemu02"
    (tmp_path / "qemu.jinja2").write_text("{% extends 'base.jinja2' %}{% block body %}site: one\n{% endblock %}")
    assert "site" not in yaml.safe_load(render())  # the same state: what was loaded for it
    assert yaml.safe_load(render(state=("s", 2)))["site"] == "one"
    with pytest.raises(TemplateError) as info:  # errors name the dictionary on the shared path too
        render(QEMU_DICT + "{% set x = 1 }\n", state=("s", 2))
    assert (info.value.template, info.value.line) == ("qemu01.jinja2", 2)
