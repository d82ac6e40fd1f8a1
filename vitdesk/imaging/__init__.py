"""CT/DICOM I/O and pixel maths (numpy, pydicom, SimpleITK, OpenCV; no torch, no Qt)."""
