# cython: language_level=3
"""The C side of one connection row (``tcpfast.schema.CONNECTION_DTYPE``) and of what a
closed socket carried (``CLOSE_INFO_DTYPE``).

Every compiled module that reads or writes rows cimports these structs, and
checks at import (``row_layout``, ``close_info_layout``, via tcpfast.backend)
that their sizes and field offsets are the numpy dtypes'. Arrays handed in from Python are checked by
``row_pointer`` (dtype, dimensions, contiguity, writability) before a byte is
read or written; lengths and offsets are the caller's to check.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef struct Row:
    uint8_t local_addr[16]
    uint8_t remote_addr[16]
    uint16_t local_port
    uint16_t remote_port
    uint8_t family
    uint8_t state
    uint16_t timer
    uint64_t netns
    uint32_t tx_queue
    uint32_t rx_queue
    uint32_t uid
    uint32_t retransmits
    uint64_t inode
    uint64_t cookie

# What a closed socket carried: tcpfast.schema.CLOSE_INFO_DTYPE.
cdef struct CloseInfo:
    uint64_t bytes_sent
    uint64_t bytes_received
    uint64_t data_bytes_sent
    uint32_t segments_sent
    uint32_t segments_received
    uint32_t retransmits
    uint32_t rtt_us
    uint32_t min_rtt_us
    uint8_t state
    uint8_t _reserved
    uint16_t known

cdef enum:
    ROW_WORDS = 10           # a row as 64-bit words
    PORTS_WORD = 4           # ports and family (masked: state and timer share the word)
    NETNS_WORD = 5
    INODE_WORD = 8

cdef inline object row_layout_of():
    """(itemsize, {field: offset}) of Row."""
    cdef Row row
    cdef size_t base = <size_t>&row
    return sizeof(Row), {
        "local_addr": <size_t>&row.local_addr - base, "remote_addr": <size_t>&row.remote_addr - base,
        "local_port": <size_t>&row.local_port - base, "remote_port": <size_t>&row.remote_port - base,
        "family": <size_t>&row.family - base, "state": <size_t>&row.state - base,
        "timer": <size_t>&row.timer - base, "netns": <size_t>&row.netns - base,
        "tx_queue": <size_t>&row.tx_queue - base, "rx_queue": <size_t>&row.rx_queue - base,
        "uid": <size_t>&row.uid - base, "retransmits": <size_t>&row.retransmits - base,
        "inode": <size_t>&row.inode - base, "cookie": <size_t>&row.cookie - base}

cdef inline object close_info_layout_of():
    """(itemsize, {field: offset}) of CloseInfo."""
    cdef CloseInfo info
    cdef size_t base = <size_t>&info
    return sizeof(CloseInfo), {
        "bytes_sent": <size_t>&info.bytes_sent - base,
        "bytes_received": <size_t>&info.bytes_received - base,
        "data_bytes_sent": <size_t>&info.data_bytes_sent - base,
        "segments_sent": <size_t>&info.segments_sent - base,
        "segments_received": <size_t>&info.segments_received - base,
        "retransmits": <size_t>&info.retransmits - base, "rtt_us": <size_t>&info.rtt_us - base,
        "min_rtt_us": <size_t>&info.min_rtt_us - base, "state": <size_t>&info.state - base,
        "_reserved": <size_t>&info._reserved - base, "known": <size_t>&info.known - base}

cdef inline Row* row_pointer(object rows, bint writable, str name) except? NULL:
    """The first row of ``rows``, once ``tcpfast.schema.check_rows`` has checked it (a
    1-d, C-contiguous array of CONNECTION_DTYPE, writable when it is to be written,
    the checks and words the pure-Python code uses); NULL when it is empty.

    The pointer stays valid while the caller holds ``rows``.
    """
    from tcpfast.schema import check_rows
    cdef const uint8_t[::1] data
    check_rows(rows, name, writable=writable)
    if rows.shape[0] == 0:
        return NULL
    data = rows.view("u1")
    return <Row*>&data[0]
