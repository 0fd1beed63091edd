"""The product's promise on real faces: the right name for enrolled people, unknown for strangers."""

from fastapi.testclient import TestClient

from tests.conftest import orl, photo
from tests.service.api.conftest import assert_consistent, files, make_client

ENROLLED = range(1, 11)  # ORL s1..s10: photos 1-3 enrolled, 4-10 probed
STRANGERS = range(11, 21)  # ORL s11..s20: never enrolled


def enroll_orl(client: TestClient) -> dict[int, int]:
    ids = {}
    for person in ENROLLED:
        r = client.post(
            "/enroll", data={"name": f"s{person}"}, files=files("images", *(orl(person, i) for i in (1, 2, 3)))
        )
        assert r.status_code == 201, r.json()
        body = r.json()
        assert body["identity"]["faces"] == 3 and len(body["accepted"]) == 3 and body["rejected"] == []
        ids[person] = body["identity"]["id"]
    return ids


def test_orl_people_are_recognised_and_strangers_are_unknown(client: TestClient) -> None:
    ids = enroll_orl(client)
    for person in ENROLLED:
        for i in range(4, 11):
            r = client.post("/identify", files=files("image", orl(person, i)))
            assert r.status_code == 200
            (face,) = r.json()["faces"]
            assert face["decision"] == "match", (person, i, face["similarity"])
            assert face["identity"]["id"] == ids[person]
    threshold = None
    for person in STRANGERS:
        for i in range(1, 11):
            body = client.post("/identify", files=files("image", orl(person, i))).json()
            (face,) = body["faces"]
            threshold = body["threshold"]
            assert face["decision"] == "unknown" and face["identity"] is None, (person, i, face["similarity"])
            assert face["similarity"] < threshold  # the best candidate's cosine is still reported
            assert len(face["candidates"]) == 5
    assert threshold is not None
    assert_consistent(client)


def test_real_photos(client: TestClient) -> None:
    obama = client.post(
        "/enroll", data={"name": "Barack Obama", "external_id": "obama"}, files=files("images", photo("obama.jpg"))
    )
    assert obama.status_code == 201
    body = client.post("/identify", files=files("image", photo("obama2.jpg"))).json()
    assert body["faces"][0]["decision"] == "match"
    assert body["faces"][0]["identity"]["external_id"] == "obama"
    assert body["model"]["name"] == "sface" and body["model"]["provider"] == "CPUExecutionProvider"
    biden = client.post("/identify", files=files("image", photo("biden.jpg"))).json()
    assert biden["faces"][0]["decision"] == "unknown"
    group = client.post("/identify", files=files("image", photo("t1.jpg"))).json()
    assert len(group["faces"]) == 6 and all(f["decision"] == "unknown" for f in group["faces"])
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in group["faces"]]
    assert areas == sorted(areas, reverse=True)


def test_per_request_threshold_and_top_k(client: TestClient) -> None:
    enroll_orl(client)
    probe = files("image", orl(1, 5))
    strict = client.post("/identify", data={"threshold": "0.999", "top_k": "2"}, files=probe).json()
    assert strict["threshold"] == 0.999 and strict["threshold_source"] == "request"
    assert strict["faces"][0]["decision"] == "unknown" and len(strict["faces"][0]["candidates"]) == 2
    lax = client.post("/identify", data={"threshold": "-1"}, files=files("image", orl(15, 1))).json()
    assert lax["faces"][0]["decision"] == "match"  # any threshold the caller asks for is honoured


def test_no_face_gives_an_empty_list(client: TestClient) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (120, 120, 120)).save(buffer, "PNG")
    body = client.post("/identify", files=files("image", buffer.getvalue())).json()
    assert body["faces"] == []


def test_enroll_skips_bad_images_and_ambiguous_ones(client: TestClient) -> None:
    r = client.post(
        "/enroll",
        data={"name": "Obama"},
        files=files("images", photo("obama.jpg"), b"not an image", photo("t1.jpg"), photo("obama2.jpg")),
    )
    assert r.status_code == 201, r.json()
    body = r.json()
    assert [a["image"] for a in body["accepted"]] == [0, 3]
    assert {r["image"]: r["code"] for r in body["rejected"]} == {1: "invalid_image", 2: "ambiguous_faces"}
    assert body["identity"]["faces"] == 2


def test_verify_pairs_and_identity(client: TestClient) -> None:
    same = client.post(
        "/verify", files=files("image_a", photo("obama.jpg")) + files("image_b", photo("obama2.jpg"))
    ).json()
    other = client.post(
        "/verify", files=files("image_a", photo("obama.jpg")) + files("image_b", photo("biden.jpg"))
    ).json()
    assert same["decision"] == "match" and other["decision"] == "no_match"
    assert same["similarity"] > other["similarity"]
    ident = client.post("/enroll", data={"name": "s4"}, files=files("images", orl(4, 1), orl(4, 2))).json()["identity"]
    r = client.post("/verify", data={"identity_id": str(ident["id"])}, files=files("image_a", orl(4, 9))).json()
    assert r["decision"] == "match" and r["box_b"] is None
    assert client.post("/verify", files=files("image_a", orl(4, 9))).status_code == 422
    assert client.post("/verify", data={"identity_id": "999"}, files=files("image_a", orl(4, 9))).status_code == 404


def test_detect(client: TestClient) -> None:
    body = client.post("/detect", files=files("image", photo("t1.jpg"))).json()
    assert len(body["faces"]) == 6 and (body["width"], body["height"]) == (1280, 886)
    assert all(len(f["landmarks"]) == 5 for f in body["faces"])


def test_timings_and_metrics(client: TestClient) -> None:
    r = client.post("/identify", files=files("image", photo("obama.jpg")))
    stages = {part.split(";")[0].strip() for part in r.headers["server-timing"].split(",")}
    assert {"decode", "detect", "align", "embed", "search", "db"} <= stages
    metrics = client.get("/metrics").text
    assert 'faceid_stage_seconds_count{stage="embed"}' in metrics
    assert 'faceid_request_seconds_count{route="/identify"}' in metrics


def test_gallery_comes_back_from_the_database(db_url: str) -> None:
    with make_client(db_url) as first:
        enroll_orl(first)
    with make_client(db_url) as second:
        ready = assert_consistent(second)
        assert ready["gallery_size"] == 30
        face = second.post("/identify", files=files("image", orl(7, 8))).json()["faces"][0]
        assert face["decision"] == "match" and face["identity"]["name"] == "s7"


def test_faces_of_another_model_are_not_searched(db_url: str) -> None:
    from sqlalchemy import create_engine, text

    with make_client(db_url) as first:
        enroll_orl(first)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE faces SET model = 'old@1' WHERE identity_id IN (SELECT id FROM identities WHERE name = 's1')")
        )
    engine.dispose()
    with make_client(db_url) as second:
        ready = assert_consistent(second)
        assert ready["faces_of_other_models"] == {"old@1": 3} and ready["gallery_size"] == 27
        face = second.post("/identify", files=files("image", orl(1, 8))).json()["faces"][0]
        assert face["decision"] == "unknown"


def test_a_phone_sized_photo_is_identified_with_full_resolution_boxes(client: TestClient) -> None:
    import io

    from PIL import Image

    client.post("/enroll", data={"name": "Obama"}, files=files("images", photo("obama.jpg")))
    source = Image.open(io.BytesIO(photo("obama2.jpg")))
    buffer = io.BytesIO()
    source.resize((source.width * 4, source.height * 4)).save(buffer, "JPEG", quality=90)
    small = client.post("/identify", files=files("image", photo("obama2.jpg"))).json()["faces"][0]
    big = client.post("/identify", files=files("image", buffer.getvalue())).json()["faces"][0]
    assert big["decision"] == "match" and big["identity"]["name"] == "Obama"
    assert abs(big["similarity"] - small["similarity"]) < 0.05
    for a, b in zip(big["box"], small["box"], strict=True):
        assert abs(a / 4 - b) < 6
