"""Validate teams/manifest.json against Microsoft's official JSON schema and build the Teams app zip.

    .venv/bin/python scripts/teams_package.py [--schemas build/schemas] [--out build/teams/cg81-teams-app.zip]

The schema for the manifest's own `manifestVersion` comes from build/schemas/teams/v<version>/ (fetched
from a registry package by scripts/fetch_channel_schemas.sh, `make channel-schemas`); nothing is
downloaded here. The icons are checked too: color.png 192x192, outline.png 32x32 white on transparency.

Deployment values come from the environment, so nothing tenant-specific is committed:
    MICROSOFT_APP_ID     the bot's app ID → bots[0].botId (and the app's own id unless TEAMS_APP_ID is set)
    TEAMS_APP_ID         a separate GUID for the Teams app, if wanted
    TEAMS_DEVELOPER_NAME, TEAMS_WEBSITE_URL, TEAMS_PRIVACY_URL, TEAMS_TERMS_URL   the publisher's details
Without MICROSOFT_APP_ID the zip carries the all-zero placeholder ID: valid, but not one to upload.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEAMS_DIR = ROOT / "teams"
PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"
ICON_SIZES = {"color": (192, 192), "outline": (32, 32)}


def load_manifest(env: dict | None = None) -> dict:
    """teams/manifest.json with the deployment's IDs and publisher details from the environment."""
    env = os.environ if env is None else env
    manifest = json.loads((TEAMS_DIR / "manifest.json").read_text(encoding="utf-8"))
    app_id = (env.get("MICROSOFT_APP_ID") or "").strip()
    if app_id:
        manifest["bots"][0]["botId"] = app_id
        manifest["id"] = (env.get("TEAMS_APP_ID") or "").strip() or app_id
    for var, key in (("TEAMS_DEVELOPER_NAME", "name"), ("TEAMS_WEBSITE_URL", "websiteUrl"),
                     ("TEAMS_PRIVACY_URL", "privacyUrl"), ("TEAMS_TERMS_URL", "termsOfUseUrl")):
        if (env.get(var) or "").strip():
            manifest["developer"][key] = env[var].strip()
    return manifest


def schema_path(manifest: dict, schemas: Path) -> Path:
    return schemas / "teams" / f"v{manifest['manifestVersion']}" / "MicrosoftTeams.schema.json"


def python_patterns(node):
    """The schema's patterns are ECMA-262 regexes; one uses the letter class \\p{L}, which Python's `re` lacks:
    it is rewritten to the same set of letters ([^\\W\\d_]), or to word characters plus "." inside a class."""
    if isinstance(node, dict):
        out = {k: python_patterns(v) for k, v in node.items()}
        if isinstance(out.get("pattern"), str) and "\\p{L}" in out["pattern"]:
            out["pattern"] = out["pattern"].replace("[\\p{L}]", "[^\\W\\d_]").replace("[\\p{L}0-9._]", "[\\w.]")
            if "\\p{" in out["pattern"]:
                out.pop("pattern")   # no faithful translation: leave that one string unchecked
        return out
    if isinstance(node, list):
        return [python_patterns(v) for v in node]
    return node


def validate(manifest: dict, schemas: Path) -> list:
    """Every schema violation, as readable lines (empty when valid)."""
    import jsonschema

    path = schema_path(manifest, schemas)
    if not path.exists():
        raise FileNotFoundError(f"no schema for manifestVersion {manifest.get('manifestVersion')} at {path}: "
                                "run `make channel-schemas`")
    schema = python_patterns(json.loads(path.read_text(encoding="utf-8")))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def check_icons(folder: Path = TEAMS_DIR) -> list:
    from PIL import Image

    problems = []
    for name, size in ICON_SIZES.items():
        path = folder / f"{name}.png"
        if not path.exists():
            problems.append(f"{path.name} is missing")
            continue
        with Image.open(path) as img:
            if img.size != size:
                problems.append(f"{path.name} is {img.size[0]}x{img.size[1]}, Teams wants {size[0]}x{size[1]}")
            if name == "outline":
                raw = img.convert("RGBA").tobytes()
                pixels = [tuple(raw[i:i + 4]) for i in range(0, len(raw), 4)]
                if not any(a == 0 for *_, a in pixels):
                    problems.append("outline.png has no transparent background")
                if any(a > 0 and (r, g, b) != (255, 255, 255) for r, g, b, a in pixels):
                    problems.append("outline.png has pixels that are not white")
    return problems


def build_zip(manifest: dict, out: Path, folder: Path = TEAMS_DIR) -> Path:
    """manifest.json and the two icons at the zip's root (what Teams' "Upload an app" expects)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = (2020, 1, 1, 0, 0, 0)   # fixed timestamps: the same inputs give the same zip
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("manifest.json", stamp), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        for name in (manifest["icons"]["color"], manifest["icons"]["outline"]):
            z.writestr(zipfile.ZipInfo(name, stamp), (folder / name).read_bytes())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", type=Path, default=ROOT / "build" / "schemas")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "teams" / "cg81-teams-app.zip")
    parser.add_argument("--check-only", action="store_true", help="validate, do not write the zip")
    args = parser.parse_args(argv)
    manifest = load_manifest()
    try:
        problems = validate(manifest, args.schemas)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    problems += check_icons()
    if problems:
        print("teams/manifest.json is not valid:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"teams/manifest.json is valid against the official MicrosoftTeams.schema.json "
          f"v{manifest['manifestVersion']} ({schema_path(manifest, args.schemas)})")
    if args.check_only:
        return 0
    out = build_zip(manifest, args.out)
    print(f"wrote {out}")
    if manifest["bots"][0]["botId"] == PLACEHOLDER_ID:
        print("note: MICROSOFT_APP_ID is not set, so the package carries the placeholder ID: set it (and the "
              "TEAMS_* publisher details) before building the zip you upload to Teams")
    return 0


if __name__ == "__main__":
    sys.exit(main())
