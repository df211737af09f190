from collections.abc import Buffer

def find(
    data: Buffer, /
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]: ...
