"""`faceid`: run the service, migrate the database, bulk-enroll a folder of people."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from service.errors import FaceIdError
from service.logs import configure_logging
from service.settings import Settings

if TYPE_CHECKING:
    from service.recognizer import Recognizer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".pgm", ".ppm"}


def prepare(settings: Settings) -> str:
    """Before any worker starts: migrate (once, not in every worker at once) and settle the admin
    key. Returns where the admin key is, in words, for the start-up banner."""
    from service.auth.bootstrap import bootstrap_admin_key
    from service.auth.keys import KeyStore
    from service.store import Store
    from service.store.migrate import upgrade, wait_for_database

    store = Store.from_url(settings.database_url)
    try:
        wait_for_database(store.engine)
        if settings.auto_migrate:
            upgrade(store.engine)
        result = bootstrap_admin_key(KeyStore(store), settings)
    finally:
        store.close()
    if result.outcome == "disabled":
        return "no key needed: FACEID_AUTH=false (local experiments only)"
    if result.outcome == "created":
        return f"a new admin key was written to {result.path} (mode 0600): export FACEID_API_KEY=$(cat {result.path})"
    if result.outcome in ("registered", "known"):
        where = result.path or "FACEID_ADMIN_KEY"
        return f"the admin key is the one given in {where}"
    if result.path is not None:
        return f"the first admin key is in {result.path} (faceid keys list shows every key)"
    return "keys exist already; faceid keys create makes another, faceid keys list shows them"


def serve(settings: Settings) -> None:
    import uvicorn

    admin = prepare(settings)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(f"faceid: serving on http://{shown}:{settings.port} (API docs at /docs); {admin}", flush=True)
    if settings.workers > 1:
        # Workers import the factory themselves and read the same FACEID_ environment.
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
        )
        return
    from service.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


def migrate(settings: Settings, wait: float = 60.0) -> None:
    from service.store import Store
    from service.store.migrate import upgrade, wait_for_database

    store = Store.from_url(settings.database_url)
    try:
        wait_for_database(store.engine, timeout=wait)
        upgrade(store.engine)
    finally:
        store.close()


def _enroll_person(recognizer: Recognizer, person: Path, files: list[Path], chunk_size: int) -> int:
    """One person, all or nothing: every photo is analysed first (`chunk_size` at a time, as
    POST /enroll would take them), then the identity and all its faces are written in one
    transaction. A person whose photos give no face is not stored at all, so a rerun starts clean."""
    from service.errors import NoFace
    from service.recognizer import Rejection

    new, rejected = [], []
    for start in range(0, len(files), chunk_size):
        chunk = [f.read_bytes() for f in files[start : start + chunk_size]]
        try:
            _, faces, refused, _ = recognizer.analyzer.new_faces(chunk)
        except FaceIdError as exc:
            rejected.append(Rejection(start, exc.code, exc.message))
            continue
        new.extend(faces)
        rejected.extend(refused)
    if not new:
        raise NoFace(f"no photo of {person.name} gave a usable face ({len(rejected)} rejected)")
    recognizer.store.create_identity(person.name, person.name, new)
    return len(new)


def enroll_folder(settings: Settings, root: Path, skip_existing: bool, collection: str = "default") -> int:
    """One identity per sub-folder (its name is the folder name and external_id), through the
    same `Recognizer.enroll` that `POST /enroll` calls; several people at once, one per core."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    from service.app import build_collections
    from service.errors import Conflict

    people = sorted(p for p in root.iterdir() if p.is_dir())
    if not people:
        print(f"no sub-folders (one per person) in {root}", file=sys.stderr)
        return 2
    collections = build_collections(settings)
    recognizer = collections.recognizer(collection)
    todo: list[tuple[Path, list[Path]]] = []
    skipped = 0
    for person in people:
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        if skip_existing and recognizer.store.find_by_external_id(person.name) is not None:
            skipped += 1
            continue
        todo.append((person, files))
    enrolled = photos = failed = existing = 0
    workers = settings.inference_jobs
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(todo), unit="person", desc="enroll") as bar:
        futures = {
            pool.submit(_enroll_person, recognizer, person, files, settings.max_images_per_request): person
            for person, files in todo
        }
        for future in as_completed(futures):
            bar.update(1)
            try:
                photos += future.result()
                enrolled += 1
            except Conflict:  # enrolled by an earlier run (people are written whole)
                existing += 1
            except FaceIdError as exc:
                failed += 1
                tqdm.write(f"{futures[future].name}: {exc.code}: {exc.message}")
            bar.set_postfix(people=enrolled, photos=photos, failed=failed)
    print(f"enrolled {enrolled} people from {photos} photos; {skipped + existing} already enrolled; {failed} failed")
    collections.store.close()
    return 1 if failed and not (enrolled or existing or skipped) else 0


def add_keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys (straight in the database)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create a key; the key alone is the last line of the output")
    create.add_argument("--name", required=True, help="a unique name for the key (who or what uses it)")
    create.add_argument("--scopes", required=True, help="comma-separated: identify, enroll, read, delete, admin")
    create.add_argument("--collections", help="comma-separated collections the key may use (default: all)")
    create.add_argument(
        "--rate-limit", type=int, help="requests per minute (default: FACEID_RATE_LIMIT_PER_MINUTE; 0: no limit)"
    )
    actions.add_parser("list", help="list keys by prefix and name (never the keys)")
    revoke = actions.add_parser("revoke", help="revoke a key: it stops working everywhere within a second")
    revoke.add_argument("key", metavar="PREFIX_OR_NAME", help="the key's prefix (fid_...), name or id")


def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    from service.auth import KeyStore, parse_scopes
    from service.store import Store
    from service.store.migrate import upgrade

    store = Store.from_url(settings.database_url)
    try:
        if settings.auto_migrate:
            upgrade(store.engine)
        keys = KeyStore(store)
        if args.keys_command == "create":
            collections = None if args.collections is None else args.collections.split(",")
            record, key = keys.create(
                args.name, parse_scopes(args.scopes), collections=collections, rate_limit=args.rate_limit
            )
            seen = "all collections" if record.collections is None else ",".join(sorted(record.collections))
            rate = "default" if record.rate_limit is None else f"{record.rate_limit}/min"
            print(
                f"created key {record.id} {record.name!r}: prefix {record.prefix}, scopes "
                f"{','.join(sorted(record.scopes))}, {seen}, rate limit {rate}. It is shown only now:"
            )
            print(key)
        elif args.keys_command == "list":
            print(f"{'ID':>4}  {'PREFIX':<16}  {'NAME':<24}  {'SCOPES':<30}  {'COLLECTIONS':<20}  {'RATE':>7}  STATUS")
            for k in keys.list_keys():
                seen = "*" if k.collections is None else ",".join(sorted(k.collections))
                rate = "default" if k.rate_limit is None else str(k.rate_limit)
                state = "active" if k.revoked_at is None else f"revoked {k.revoked_at:%Y-%m-%d %H:%M:%S}Z"
                print(
                    f"{k.id:>4}  {k.prefix:<16}  {k.name:<24}  {','.join(sorted(k.scopes)):<30}  {seen:<20}  "
                    f"{rate:>7}  {state}"
                )
        elif args.keys_command == "revoke":
            record = keys.revoke(keys.resolve(args.key).id)
            print(f"revoked key {record.id} {record.name!r} (prefix {record.prefix})")
    except (FaceIdError, ValueError) as exc:
        print(f"faceid keys {args.keys_command}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceid", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="run the HTTP service (settings from FACEID_* environment variables)")
    serve_parser.add_argument("--host", help="address to bind (FACEID_HOST; default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port (FACEID_PORT; default 8000)")
    serve_parser.add_argument("--workers", type=int, help="worker processes (FACEID_WORKERS; default 1)")
    migrate_parser = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate_parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to keep retrying while the database refuses connections"
    )
    bulk = sub.add_parser("enroll-folder", help="enroll one identity per sub-folder of photos")
    bulk.add_argument("root", type=Path)
    bulk.add_argument("--skip-existing", action="store_true", help="skip folders already enrolled (by external_id)")
    bulk.add_argument("--collection", default="default", help="the collection to enroll into (default: default)")
    add_keys_parser(sub)
    args = parser.parse_args(argv)
    flags = {k: getattr(args, k, None) for k in ("host", "port", "workers")}
    try:
        settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:  # the message only: settings errors never echo their input
        print(f"faceid: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command in (None, "serve"):
        serve(settings)
    elif args.command == "migrate":
        migrate(settings, args.wait)
    elif args.command == "keys":
        return keys_command(settings, args)
    elif args.command == "enroll-folder":
        return enroll_folder(settings, args.root, args.skip_existing, args.collection)
    return 0


if __name__ == "__main__":
    sys.exit(main())
