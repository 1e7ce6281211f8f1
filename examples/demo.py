"""The seed's first example, for real: provision, load an archive, run, save, load.

Run with `make demo` (as root). Uses the default data root unless APPCONTAINERS_ROOT
is set; everything it creates besides the cached base image is removed at the end.
"""
import io
import os
import sys
import tarfile
import tempfile
import time

import appcontainers


def make_archive(path):
    with tarfile.open(path, "w:gz") as tf:
        script = b"#!/bin/sh\necho \"hello from $(hostname) at $(ip -4 -o addr show eth0 | awk '{print $4}')\"\n"
        info = tarfile.TarInfo("app/hello.sh")
        info.size, info.mode = len(script), 0o755
        tf.addfile(info, io.BytesIO(script))


def main():
    t0 = time.monotonic()
    svc = appcontainers.setup_service()
    print(f"service ready (data root {svc.settings.root}, bridge {svc.settings.bridge} "
          f"{svc.settings.subnet})")
    c = svc.provision()
    print(f"provisioned {c.name}: ip={c.ip} mac={c.mac} ({time.monotonic() - t0:.2f}s incl. base image)")
    loaded = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            archive = os.path.join(tmp, "app.tar.gz")
            make_archive(archive)
            c.load_archive(archive)
            c.create_file("/etc/app.conf", "greeting=hi\n", mode=0o644)
            r = c.run("/root/app/hello.sh; cat /etc/app.conf; ip -o link show eth0 | grep -o 'link/ether [^ ]*'",
                      on_output=lambda stream, line: print(f"  [{stream}] {line}"))
            print(f"command exit code: {r.exit_code}")
            r = c.run("echo to stderr >&2; exit 7")
            print(f"second command: exit code {r.exit_code}, stderr {r.stderr!r}")
            if svc.images is not None:
                image_path = os.path.join(tmp, "demo.aimg")
                c.stop()
                img = c.save_image(image_path)
                print(f"saved {image_path}: id {img.id[:12]}, {os.path.getsize(image_path)} bytes")
                loaded = svc.load_image(image_path, ephemeral=True)
                loaded.add_startup_command("echo startup ran > /tmp/started")
                loaded.start()
                r = loaded.run("cat /tmp/started; /root/app/hello.sh")
                print(f"loaded {loaded.name} (ephemeral) ip={loaded.ip}: {r.stdout.strip()!r}")
                loaded.stop()  # ephemeral: this removes it
                loaded = None
                svc.remove_image(img.id)  # the demo leaves no image in the store
    finally:
        if loaded is not None:
            loaded.destroy()
        c.destroy()
    print(f"cleaned up; demo took {time.monotonic() - t0:.2f}s")


if __name__ == "__main__":
    try:
        main()
    except appcontainers.AppContainersError as e:
        sys.exit(f"demo failed: {e}")
