from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open('addp_mm/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='addp_mm',
    version=read_version(),
    description='ADDP (Alternating Denoising Diffusion Process) as an OpenMMLab 2.x plugin suite',
    packages=find_packages(include=['addp_mm', 'addp_mm.*']),
    python_requires='>=3.9',
    license='Apache-2.0',
)
