"""Build the JSON Schema of an OCSF event class from the OCSF schema's own files, offline.

How tests/ocsf/detection_finding-1.1.0.schema.json was made (no network; the schema repository at its
release tag, compiled with the OCSF project's own compiler, ocsf-lib):

    git -C ocsf-schema archive v1.1.0 | tar -x -C ocsf-1.1.0          # github.com/ocsf/ocsf-schema
    python -m ocsf.compile ocsf-1.1.0 > compiled.json                 # pip install ocsf-lib==0.10.4
    python tests/ocsf/compile_jsonschema.py compiled.json detection_finding > detection_finding-1.1.0.schema.json

The conversion follows the OCSF server's JSON Schema export: every attribute of the class and of the
objects it reaches becomes a property (scalar types by their base type, objects by reference, arrays where
`is_array`), integer enumerations (`*_id`) list their values, `required` attributes are required, and no
other property is allowed. Attributes that only a profile adds are left out unless the profile is named
(`--profile`), as an event declares its profiles in `metadata.profiles`. The OCSF schema is Apache-2.0
(LICENSE and NOTICE beside this file).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

BASE = {"string_t": "string", "integer_t": "integer", "long_t": "integer", "float_t": "number",
        "boolean_t": "boolean", "timestamp_t": "integer"}


def scalar(types: dict[str, Any], name: str) -> dict[str, Any]:
    seen = name
    while seen not in BASE and seen != "json_t":
        parent = (types.get(seen) or {}).get("type")
        if not parent:
            break
        seen = parent
    if seen == "json_t":
        return {}
    schema: dict[str, Any] = {"type": BASE.get(seen, "string")}
    regex = (types.get(name) or {}).get("regex")
    if regex and schema["type"] == "string":
        schema["pattern"] = regex
    return schema


def attributes(definition: dict[str, Any], schema: dict[str, Any], profiles: set[str], defs: dict[str, Any],
               pending: list[str]) -> dict[str, Any]:
    properties, required = {}, []
    for name, attr in sorted(definition["attributes"].items()):
        if attr.get("profile") and attr["profile"] not in profiles:
            continue
        kind = attr["type"]
        if kind == "object":
            item: dict[str, Any] = {"type": "object"}
        elif kind in schema["objects"]:
            item = {"$ref": f"#/$defs/{kind}"}
            if kind not in defs and kind not in pending:
                pending.append(kind)
        else:
            item = scalar(schema["types"], kind)
            if attr.get("enum") and item.get("type") == "integer":
                item["enum"] = sorted(int(value) for value in attr["enum"])
        if attr.get("is_array"):
            item = {"type": "array", "items": item}
        if attr.get("description"):
            item = {"description": attr["caption"], **item} if "$ref" not in item else item
        properties[name] = item
        if attr.get("requirement") == "required":
            required.append(name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def class_schema(schema: dict[str, Any], name: str, profiles: set[str]) -> dict[str, Any]:
    definition = schema["classes"][name]
    defs: dict[str, Any] = {}
    pending: list[str] = []
    root = attributes(definition, schema, profiles, defs, pending)
    while pending:
        obj = pending.pop()
        defs[obj] = {}  # claimed before recursing: objects refer to themselves (process.parent_process)
        defs[obj] = {"title": schema["objects"][obj]["caption"],
                     **attributes(schema["objects"][obj], schema, profiles, defs, pending)}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://schema.ocsf.io/{schema['version']}/classes/{name}",
            "title": f"{definition['caption']} (OCSF {schema['version']}, class_uid {definition['uid']})",
            **root, "$defs": dict(sorted(defs.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compiled", help="the output of `python -m ocsf.compile SCHEMA_DIR`")
    parser.add_argument("event_class", help="e.g. detection_finding")
    parser.add_argument("--profile", action="append", default=[], help="a profile the events declare")
    args = parser.parse_args()
    with open(args.compiled) as source:
        schema = json.load(source)
    json.dump(class_schema(schema, args.event_class, set(args.profile)), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
