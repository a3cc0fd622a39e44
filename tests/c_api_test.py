"""The C API from Python through ctypes (standard library only).

Usage: python3 c_api_test.py LIBDIFFUSE_SO TINY_MODEL_DIR
"""
import ctypes
import math
import os
import sys
import tempfile
import unittest

LIB, MODEL = sys.argv[1], sys.argv[2]


class ModelInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("channels", "height", "width", "num_classes", "timesteps", "step")]


class SampleOptions(ctypes.Structure):
    _fields_ = [("sampler", ctypes.c_char_p), ("steps", ctypes.c_int64), ("n", ctypes.c_int64),
                ("batch", ctypes.c_int64), ("seed", ctypes.c_uint64), ("eta", ctypes.c_double),
                ("class_label", ctypes.c_int64), ("guidance", ctypes.c_double),
                ("clip_x0", ctypes.c_int)]


def load_library(path):
    lib = ctypes.CDLL(path)
    lib.diffuse_version.restype = ctypes.c_char_p
    lib.diffuse_last_error.restype = ctypes.c_char_p
    lib.diffuse_model_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.POINTER(ctypes.c_void_p)]
    lib.diffuse_model_free.argtypes = [ctypes.c_void_p]
    lib.diffuse_model_get_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(ModelInfo)]
    lib.diffuse_sample_options_init.argtypes = [ctypes.POINTER(SampleOptions)]
    lib.diffuse_sample_values.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.diffuse_sample_values.restype = ctypes.c_size_t
    lib.diffuse_sample.argtypes = [ctypes.c_void_p, ctypes.POINTER(SampleOptions),
                                   ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
    lib.diffuse_save_npy.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_float)] + \
        [ctypes.c_int64] * 4
    return lib


class CApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lib = load_library(LIB)
        cls.model = ctypes.c_void_p()
        status = cls.lib.diffuse_model_load(MODEL.encode(), b"cpu", ctypes.byref(cls.model))
        assert status == 0, cls.lib.diffuse_last_error().decode()

    @classmethod
    def tearDownClass(cls):
        cls.lib.diffuse_model_free(cls.model)

    def sample(self, **fields):
        opts = SampleOptions()
        self.lib.diffuse_sample_options_init(ctypes.byref(opts))
        for k, v in fields.items():
            setattr(opts, k, v)
        n = self.lib.diffuse_sample_values(self.model, opts.n)
        buf = (ctypes.c_float * n)()
        status = self.lib.diffuse_sample(self.model, ctypes.byref(opts), buf, n)
        return status, list(buf)

    def test_version(self):
        version = self.lib.diffuse_version().decode()
        self.assertRegex(version, r"^\d+\.\d+\.\d+$")

    def test_info(self):
        info = ModelInfo()
        self.assertEqual(self.lib.diffuse_model_get_info(self.model, ctypes.byref(info)), 0)
        # tests/data/diffusers_tiny/config.json
        self.assertEqual((info.channels, info.height, info.width, info.num_classes),
                         (2, 16, 16, 4))

    def test_sample_is_seeded(self):
        status, a = self.sample(n=2, steps=3, seed=11)
        self.assertEqual(status, 0, self.lib.diffuse_last_error())
        self.assertEqual(len(a), 2 * 2 * 16 * 16)
        self.assertTrue(all(math.isfinite(v) for v in a))
        self.assertEqual(self.sample(n=2, steps=3, seed=11)[1], a)
        self.assertNotEqual(self.sample(n=2, steps=3, seed=12)[1], a)
        # Image i's noise is its own: the first of two images is the image of n=1.
        first = self.sample(n=1, steps=3, seed=11)[1]
        self.assertLess(max(abs(x - y) for x, y in zip(first, a[:2 * 16 * 16])), 1e-4)

    def test_errors(self):
        handle = ctypes.c_void_p()
        status = self.lib.diffuse_model_load(b"/nonexistent/dir", b"cpu", ctypes.byref(handle))
        self.assertEqual(status, 1)
        self.assertIsNone(handle.value)
        self.assertIn("/nonexistent/dir", self.lib.diffuse_last_error().decode())
        status, _ = self.sample(n=1, steps=3, sampler=b"bogus")
        self.assertEqual(status, 1)
        self.assertIn("--sampler", self.lib.diffuse_last_error().decode())
        opts = SampleOptions()
        self.lib.diffuse_sample_options_init(ctypes.byref(opts))
        small = (ctypes.c_float * 10)()
        self.assertEqual(self.lib.diffuse_sample(self.model, ctypes.byref(opts), small, 10), 3)

    def test_save_npy(self):
        _, a = self.sample(n=1, steps=2, seed=1)
        buf = (ctypes.c_float * len(a))(*a)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.npy")
            self.assertEqual(self.lib.diffuse_save_npy(path.encode(), buf, 1, 2, 16, 16), 0)
            with open(path, "rb") as f:
                data = f.read()
            self.assertEqual(data[:6], b"\x93NUMPY")
            header_len = int.from_bytes(data[8:10], "little")
            header = data[10:10 + header_len].decode()
            self.assertIn("'shape': (1, 2, 16, 16)", header)
            self.assertIn("<f4", header)
            self.assertEqual(len(data) - 10 - header_len, 4 * len(a))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
