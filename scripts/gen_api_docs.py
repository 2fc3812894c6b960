"""Write docs/api.md, the API reference, from the comments in protos/stateward/v1/*.proto.

protoc (grpc_tools) compiles the protos into a FileDescriptorSet with
``--include_source_info``; the comments come from its SourceCodeInfo, so no
.proto text is parsed here. The output is deterministic, which lets
``--check`` (``make docs-check``) fail when docs/api.md is stale.

    python scripts/gen_api_docs.py            # rewrite docs/api.md
    python scripts/gen_api_docs.py --check    # exit 1 if docs/api.md is stale
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
PROTO_DIR = PROTO_ROOT / "stateward" / "v1"
OUTPUT = REPO / "docs" / "api.md"
# The reading order: the services in the order a user meets them, shared types last.
FILE_ORDER = ["lifecycle", "state", "execution", "recovery", "common"]

# Field numbers of the descriptor messages, as SourceCodeInfo paths use them.
FILE_PACKAGE, FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 2, 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE = 2
SERVICE_METHOD = 2

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    F.TYPE_DOUBLE: "double",
    F.TYPE_FLOAT: "float",
    F.TYPE_INT64: "int64",
    F.TYPE_UINT64: "uint64",
    F.TYPE_INT32: "int32",
    F.TYPE_FIXED64: "fixed64",
    F.TYPE_FIXED32: "fixed32",
    F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes",
    F.TYPE_UINT32: "uint32",
    F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64",
    F.TYPE_SINT32: "sint32",
    F.TYPE_SINT64: "sint64",
}


def compile_descriptors(protos: Sequence[Path]) -> descriptor_pb2.FileDescriptorSet:
    """The FileDescriptorSet of ``protos`` (with comments), compiled by grpc_tools' protoc."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.pb"
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        done = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"protoc failed:\n{done.stderr}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


# -- comments ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comments:
    by_path: dict[tuple[int, ...], str]

    @classmethod
    def of(cls, proto: descriptor_pb2.FileDescriptorProto) -> Comments:
        found = {}
        for location in proto.source_code_info.location:
            text = location.leading_comments or location.trailing_comments
            if text:
                found[tuple(location.path)] = _dedent(text)
        return cls(found)

    def get(self, *path: int) -> str:
        return self.by_path.get(path, "")


def _dedent(text: str) -> str:
    """A comment without the one space protoc keeps after ``//``."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def paragraphs(text: str) -> str:
    """A block comment as Markdown: indented lines (diagrams) become a code block."""
    out: list[str] = []
    code: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("  "):
            code.append(line)
            continue
        if code:
            out += (
                ["```", *code, "```", ""]
                if not out or not out[-1]
                else ["", "```", *code, "```", ""]
            )
            code = []
        if line or (out and out[-1]):  # one blank line between blocks, never two
            out.append(line)
    return "\n".join(out).strip("\n")


def cell(text: str) -> str:
    """A comment squeezed into one table cell."""
    return " ".join(text.split()).replace("|", "\\|") or " "


# -- rendering -----------------------------------------------------------------------


def anchor(full_name: str) -> str:
    return full_name.lstrip(".").replace(".", "-").lower()


class Renderer:
    def __init__(self, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
        self.files = files
        self.maps: dict[str, tuple[descriptor_pb2.FieldDescriptorProto, ...]] = {}
        self.ours: set[str] = set()
        for proto in files:
            for name, message in self._messages(proto):
                full = f".{proto.package}.{name}"
                self.ours.add(full)
                if message.options.map_entry:
                    self.maps[full] = (message.field[0], message.field[1])
            for enum in proto.enum_type:
                self.ours.add(f".{proto.package}.{enum.name}")

    @staticmethod
    def _messages(
        proto: descriptor_pb2.FileDescriptorProto,
    ) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
        def walk(
            prefix: str, messages: Sequence[descriptor_pb2.DescriptorProto]
        ) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
            for message in messages:
                name = f"{prefix}{message.name}"
                yield name, message
                yield from walk(f"{name}.", message.nested_type)

        yield from walk("", proto.message_type)

    def type_link(self, type_name: str) -> str:
        short = type_name.lstrip(".").removeprefix("stateward.v1.")
        if type_name in self.ours:
            return f"[`{short}`](#{anchor(type_name)})"
        return f"`{short}`"

    def field_type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type_name in self.maps:
            key, value = self.maps[field.type_name]
            return f"map&lt;{self.field_type(key)}, {self.field_type(value)}&gt;"
        base = (
            f"`{SCALARS[field.type]}`" if field.type in SCALARS else self.type_link(field.type_name)
        )
        if field.label == F.LABEL_REPEATED:
            return f"repeated {base}"
        return base

    def render(self) -> str:
        out = [
            "# Stateward API reference",
            "",
            "<!-- Generated by scripts/gen_api_docs.py from protos/stateward/v1/*.proto."
            " Do not edit: change the proto comments and run `make docs`. -->",
            "",
            "Package `stateward.v1`. Every service speaks gRPC; the conventions shared by all"
            " of them (namespaces, JSON documents, errors, idempotency, paging) are described"
            " under [common.proto](#commonproto).",
            "",
            "## Contents",
            "",
        ]
        for proto in self.files:
            out.append(f"- [{Path(proto.name).name}](#{Path(proto.name).name.replace('.', '')})")
            for service in proto.service:
                out.append(f"  - [{service.name}](#{anchor(f'{proto.package}.{service.name}')})")
        out.append("")
        for proto in self.files:
            out += self.render_file(proto)  # each part ends with a blank line
        return "\n".join(out).rstrip() + "\n"

    def render_file(self, proto: descriptor_pb2.FileDescriptorProto) -> list[str]:
        comments = Comments.of(proto)
        out = [f"## {Path(proto.name).name}", ""]
        overview = comments.get(FILE_PACKAGE)
        if overview:
            out += [paragraphs(overview), ""]
        for index, service in enumerate(proto.service):
            out += self.render_service(proto, comments, index, service)
        messages = [(i, m) for i, m in enumerate(proto.message_type) if not m.options.map_entry]
        if messages:
            out += ["### Messages", ""]
            for index, message in messages:
                out += self.render_message(
                    comments, (FILE_MESSAGE, index), f"{proto.package}.{message.name}", message
                )
        if proto.enum_type:
            out += ["### Enums", ""]
            for index, enum in enumerate(proto.enum_type):
                out += self.render_enum(
                    comments, (FILE_ENUM, index), f"{proto.package}.{enum.name}", enum
                )
        return out

    def render_service(
        self,
        proto: descriptor_pb2.FileDescriptorProto,
        comments: Comments,
        index: int,
        service: descriptor_pb2.ServiceDescriptorProto,
    ) -> list[str]:
        full = f"{proto.package}.{service.name}"
        out = [f'### <a id="{anchor(full)}"></a>{service.name}', ""]
        text = comments.get(FILE_SERVICE, index)
        if text:
            out += [paragraphs(text), ""]
        out += ["| Method | Request | Response | Description |", "|---|---|---|---|"]
        for m_index, method in enumerate(service.method):
            request = self.type_link(method.input_type)
            response = self.type_link(method.output_type)
            if method.client_streaming:
                request = f"stream {request}"
            if method.server_streaming:
                response = f"stream {response}"
            description = cell(comments.get(FILE_SERVICE, index, SERVICE_METHOD, m_index))
            out.append(f"| `{method.name}` | {request} | {response} | {description} |")
        return [*out, ""]

    def render_message(
        self,
        comments: Comments,
        path: tuple[int, ...],
        full: str,
        message: descriptor_pb2.DescriptorProto,
    ) -> list[str]:
        out = [f'#### <a id="{anchor(full)}"></a>{full.removeprefix("stateward.v1.")}', ""]
        text = comments.get(*path)
        if text:
            out += [paragraphs(text), ""]
        if message.field:
            out += ["| Field | Type | Description |", "|---|---|---|"]
            for f_index, field in enumerate(message.field):
                kind = self.field_type(field)
                if field.proto3_optional:
                    kind = f"optional {kind}"
                elif field.HasField("oneof_index"):
                    kind = f"{kind} (oneof `{message.oneof_decl[field.oneof_index].name}`)"
                description = cell(comments.get(*path, MESSAGE_FIELD, f_index))
                out.append(f"| `{field.name}` = {field.number} | {kind} | {description} |")
        else:
            out.append("No fields.")
        out.append("")
        for n_index, nested in enumerate(message.nested_type):
            if not nested.options.map_entry:
                out += self.render_message(
                    comments, (*path, MESSAGE_NESTED, n_index), f"{full}.{nested.name}", nested
                )
        for e_index, enum in enumerate(message.enum_type):
            out += self.render_enum(
                comments, (*path, MESSAGE_ENUM, e_index), f"{full}.{enum.name}", enum
            )
        return out

    def render_enum(
        self,
        comments: Comments,
        path: tuple[int, ...],
        full: str,
        enum: descriptor_pb2.EnumDescriptorProto,
    ) -> list[str]:
        out = [f'#### <a id="{anchor(full)}"></a>{full.removeprefix("stateward.v1.")}', ""]
        text = comments.get(*path)
        if text:
            out += [paragraphs(text), ""]
        out += ["| Value | Number | Description |", "|---|---|---|"]
        for v_index, value in enumerate(enum.value):
            description = cell(comments.get(*path, ENUM_VALUE, v_index))
            out.append(f"| `{value.name}` | {value.number} | {description} |")
        return [*out, ""]


def ordered(protos: Sequence[Path]) -> list[Path]:
    rank = {name: i for i, name in enumerate(FILE_ORDER)}
    return sorted(protos, key=lambda p: (rank.get(p.stem, len(rank)), p.name))


def generate() -> str:
    protos = ordered(sorted(PROTO_DIR.glob("*.proto")))
    if not protos:
        raise SystemExit(f"no .proto files in {PROTO_DIR}")
    descriptors = compile_descriptors(protos)
    by_name = {f.name: f for f in descriptors.file}
    files = [by_name[str(p.relative_to(PROTO_ROOT))] for p in protos]
    return Renderer(files).render()


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(
                f"{shown(args.output)} is stale: run 'make docs' and commit it.",
                file=sys.stderr,
            )
            return 1
        print(f"{shown(args.output)} matches the .proto comments")
        return 0
    args.output.write_text(text)
    print(f"wrote {shown(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
