"""The straightforward parse users would otherwise write (the original tool's way):
split each line, ``int(x, 16)`` each field, a tuple per row. A reference, not a product."""

from __future__ import annotations


def parse(data: bytes, family: int) -> list[tuple[int, ...]]:
    rows = []
    for line in data.split(b"\n")[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, local_port = fields[1].split(b":")
        remote, remote_port = fields[2].split(b":")
        tx_queue, rx_queue = fields[4].split(b":")
        rows.append((int(local, 16), int(local_port, 16), int(remote, 16),
                     int(remote_port, 16), int(fields[3], 16), int(tx_queue, 16),
                     int(rx_queue, 16), int(fields[7]), int(fields[9])))
    return rows
