from setuptools import find_packages, setup

setup(
    name="appcontainers",
    version="0.1.0",
    description="A high level LXC utility: app containers with static IPs, images and monitoring",
    python_requires=">=3.11",
    packages=find_packages(include=["appcontainers", "appcontainers.*"]),
    package_data={"appcontainers": ["skeletons/*.tmpl"]},
    install_requires=[
        "attrs>=23.1",
        "pyzmq>=25",
        "tempita>=0.5",
        "mfusepy>=3.0",
        "zstandard>=0.21",  # image_reader decompresses zstd squashfs blocks itself
        "click>=8.1",
        'ipaddress; python_version < "3.3"',
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "mypy>=1.10", "radon>=6"],
        "oci": ["cryptography>=42"],  # image signatures (ed25519)
        "fleet": ["ray>=2.60,<3"],  # appcontainers.fleet: hosts on a Ray cluster
    },
    entry_points={
        "console_scripts": [
            "appcontainers=appcontainers.entrypoints.cli_lean:main",  # the hot forms without click, else cli.py
            "appcontainers-agent=appcontainers.agent.__main__:main",
        ]
    },
)
