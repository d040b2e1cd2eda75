"""Build hook: generate the protobuf/gRPC modules from proto/ with grpcio-tools.

The generated files are written next to the package sources (stedq/v1, stedq/kserve) so that both
`pip install .` and `pip install -e .` see them; they are git-ignored and never edited by hand.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent.resolve()


def generate_protos() -> None:
    from grpc_tools import protoc  # build requirement (pyproject [build-system])

    proto_root = ROOT / "proto"
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    for source in sorted(proto_root.rglob("*.proto")):
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={ROOT}",
            f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}",
            str(source),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {source}")


class BuildPyWithProtos(build_py):
    def run(self):
        generate_protos()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
