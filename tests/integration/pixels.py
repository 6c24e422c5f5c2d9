"""Pixels of the PNG files Kiln writes, for tests that judge images the way a game would: a
small, strict decoder (8-bit RGBA or RGB, every filter type) and the measures the tests share.
Standard library only."""

import struct
import zlib


def read_png(path):
    """(width, height, rows): rows[y] is a bytes object of width * 4 RGBA values."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "%s is not a PNG" % path
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, "unsupported PNG"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = 4 if colour == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev, at = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 255
        elif kind == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        if channels == 3:
            line = bytearray(b"".join(bytes(line[i:i + 3]) + b"\xff" for i in range(0, stride, 3)))
        rows.append(bytes(line))
    return width, height, rows


def pixel(rows, x, y):
    return rows[y][x * 4:x * 4 + 4]


def border_clear_share(width, height, rows, percent=3.0, max_alpha=16):
    """Share of the outer `percent` of each side whose alpha is at most `max_alpha` (the alpha
    validator's measure)."""
    bx, by = max(1, int(width * percent / 100)), max(1, int(height * percent / 100))
    border = clear = 0
    for y in range(height):
        row = rows[y]
        for x in range(width):
            if x < bx or y < by or x >= width - bx or y >= height - by:
                border += 1
                clear += row[x * 4 + 3] <= max_alpha
    return clear / border


def alpha_counts(rows):
    """(fully transparent, partly transparent, opaque) pixel counts."""
    clear = partial = opaque = 0
    for row in rows:
        for a in row[3::4]:
            if a == 0:
                clear += 1
            elif a == 255:
                opaque += 1
            else:
                partial += 1
    return clear, partial, opaque


def depth_map(width, height, rows):
    """For each pixel with alpha > 0, its 4-connected distance to the nearest clear pixel (or the
    image's edge): 1 for the subject's outermost ring, 2 for the ring inside it... 0 if clear."""
    depth = [[0] * width for _ in range(height)]
    queue = []
    for y in range(height):
        for x in range(width):
            if rows[y][x * 4 + 3] == 0:
                continue
            edge = x in (0, width - 1) or y in (0, height - 1) or any(
                rows[y + dy][(x + dx) * 4 + 3] == 0 for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
            if edge:
                depth[y][x] = 1
                queue.append((x, y))
    head = 0
    while head < len(queue):
        x, y = queue[head]
        head += 1
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nx, ny = x + dx, y + dy
            if 0 <= nx < width and 0 <= ny < height and rows[ny][nx * 4 + 3] and not depth[ny][nx]:
                depth[ny][nx] = depth[y][x] + 1
                queue.append((nx, ny))
    return depth


def halo(width, height, rows):
    """How much brighter the subject's outermost ring is than its own edge a few pixels in: mean
    brightness at depth 1 minus mean brightness at depth 3 (see depth_map), each pixel weighted by
    its alpha, as it shows when composited (a nearly clear pixel shows nearly nothing). Positive
    and large: a light fringe, as a white backdrop left around the subject shows."""
    depth = depth_map(width, height, rows)
    sums = {1: [0.0, 0.0], 3: [0.0, 0.0]}
    for y in range(height):
        for x in range(width):
            d = depth[y][x]
            if d in sums:
                p = pixel(rows, x, y)
                sums[d][0] += p[3] * (p[0] + p[1] + p[2]) / 3
                sums[d][1] += p[3]
    if not sums[1][1] or not sums[3][1]:
        return 0.0
    return sums[1][0] / sums[1][1] - sums[3][0] / sums[3][1]


def subject_opaque_share(width, height, rows):
    """Share of the subject's inside (alpha >= 128, two pixels or more from anything below 128)
    that is fully opaque, and that inside's size in pixels."""
    inside = opaque = 0
    for y in range(2, height - 2):
        for x in range(2, width - 2):
            if all(rows[y + dy][(x + dx) * 4 + 3] >= 128
                   for dy in range(-2, 3) for dx in range(-2, 3)):
                inside += 1
                opaque += rows[y][x * 4 + 3] == 255
    return (opaque / inside if inside else 0.0), inside


def seams(width, height, rows):
    """The tileable validator's measure: ((left/right seam, inner), (top/bottom seam, inner))."""
    def diff(a, b):
        return (abs(a[0] - b[0]) + abs(a[1] - b[1]) + abs(a[2] - b[2])) / 3

    seam_x = sum(diff(pixel(rows, 0, y), pixel(rows, width - 1, y)) for y in range(height)) / height
    seam_y = sum(diff(pixel(rows, x, 0), pixel(rows, x, height - 1)) for x in range(width)) / width
    inner_x = [diff(pixel(rows, x, y), pixel(rows, x + 1, y))
               for x in range(1, width - 1, max(1, width // 16)) for y in range(height)]
    inner_y = [diff(pixel(rows, x, y), pixel(rows, x, y + 1))
               for y in range(1, height - 1, max(1, height // 16)) for x in range(width)]
    return ((seam_x, sum(inner_x) / max(1, len(inner_x))),
            (seam_y, sum(inner_y) / max(1, len(inner_y))))


def tiles(width, height, rows, ratio=2.0, floor=6.0):
    """Whether the image passes the tileable validator's default limits."""
    return all(seam <= max(floor, ratio * inner) for seam, inner in seams(width, height, rows))


def write_png(path, width, height, rgba=(200, 40, 40, 255)):
    """Writes a valid RGBA PNG of one colour: an artist's file, made by no backend."""
    import struct
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body)))
    row = b"\0" + bytes(rgba) * width
    data = (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)
    return data

