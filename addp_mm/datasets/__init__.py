from .embedded import EMBEDDED_PHOTOS, ADDPEmbeddedPhotos, build_embedded_photos
from .generation import ADDPGenerationDataset

__all__ = ['EMBEDDED_PHOTOS', 'ADDPEmbeddedPhotos', 'build_embedded_photos',
           'ADDPGenerationDataset']
