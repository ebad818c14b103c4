"""FITS files PyAutoFit writes (``files/dataset.fits``, ``image/fit.fits``, ...), kept as bytes.

A FITS file is stored whole, as the payload of its PyAutoFit name, and opened only when asked for:
``fit.value("dataset")`` is an astropy ``HDUList`` over the stored bytes (astropy reads each HDU's
data when it is first touched). astropy is the field's FITS library and an optional extra,
``pip install 'lensd[astro]'``; the rest of lensd never needs it.
"""

from __future__ import annotations

import io
from typing import Any, Final

from lensd.errors import MissingExtra

FITS_MAGIC: Final = b"SIMPLE  ="  # every FITS file opens with this card (FITS standard 4.4.1.1)
EXTRA: Final = "pip install 'lensd[astro]'"


def is_fits(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview)) and bytes(value[:9]) == FITS_MAGIC


def hdulist(data: bytes) -> Any:
    """An astropy ``HDUList`` reading ``data`` (MissingExtra, naming the extra, without astropy)."""
    try:
        from astropy.io import fits
    except ImportError:
        raise MissingExtra(f"reading FITS files needs astropy: {EXTRA}") from None
    return fits.open(io.BytesIO(bytes(data)), mode="readonly", memmap=False, lazy_load_hdus=True)
