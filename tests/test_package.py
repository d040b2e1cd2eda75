import subprocess
import sys

import stedq


def test_areas_import_as_one_namespace():
    import stedq.bench
    import stedq.clients
    import stedq.export
    import stedq.server
    import stedq.study
    import stedq.training

    for module in (stedq.bench, stedq.clients, stedq.export, stedq.server, stedq.study, stedq.training):
        assert module.__name__.startswith("stedq.")


def test_no_top_level_area_modules():
    # The folders are mapped into stedq.*; they must not also be importable as `server`, `training`...
    code = ("import importlib.util, sys; "
            "names = ['server', 'training', 'export', 'clients', 'bench', 'study']; "
            "found = [n for n in names if importlib.util.find_spec(n) is not None]; "
            "print(','.join(found))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                         check=True)
    assert out.stdout.strip() == ""


def test_serving_side_does_not_import_torch():
    code = ("import sys; import stedq.cli; stedq.cli.build_parser(); "
            "import stedq.server, stedq.clients; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_version_is_set():
    assert stedq.__version__ and stedq.__version__ != "0.0.0+unknown"
