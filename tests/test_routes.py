"""The route table the projects code fills and the proxy and DNS read."""

from __future__ import annotations

from taskmuxd.routes import Backend, RouteTable


def b(task: str, host: str, port: int | None = 1000, project: str = "Shop",
      ready: bool = True) -> Backend:
    return Backend(project, task, host, port, "running" if ready else "stopped", ready)


def test_lookup_by_name_apex_catch_all_and_precedence() -> None:
    table = RouteTable()
    web, api, home, rest = b("web", "web"), b("api", "api"), b("home", "@"), b("rest", "*")
    table.set_project("Shop", [web, api, home, rest])
    assert table.lookup("web.shop.localhost") == ("shop", web)
    assert table.lookup("API.SHOP.LOCALHOST.") == ("shop", api)  # case, trailing dot
    assert table.lookup("api.shop.localhost:8443") == ("shop", api)  # a Host header's port
    assert table.lookup("shop.localhost") == ("shop", home)
    assert table.lookup("other.shop.localhost") == ("shop", rest)
    assert table.lookup("a.b.shop.localhost") == ("shop", rest)
    assert table.lookup("web.blog.localhost") == (None, None)  # unknown project
    assert table.lookup("example.com") == (None, None)
    assert table.lookup("localhost") == (None, None)
    table.set_project("Shop", [web])
    assert table.lookup("other.shop.localhost") == ("shop", None)  # known, no such host
    assert table.lookup("shop.localhost") == ("shop", None)


def test_hostnames_projects_and_removal() -> None:
    table = RouteTable(tld="test")
    table.set_project("shop", [b("web", "web"), b("rest", "*"), b("home", "@")])
    table.set_project("blog", [b("api", "api", project="blog")])
    table.set_project("empty", [])
    assert table.projects() == ["blog", "empty", "shop"]
    assert table.hostnames() == ["api.blog.test", "blog.test", "shop.test", "web.shop.test"]
    assert table.knows("EMPTY") and table.lookup("x.empty.test") == ("empty", None)
    table.remove_project("shop")
    assert table.lookup("web.shop.test") == (None, None)
    assert table.projects() == ["blog", "empty"]


def test_subscribers_hear_of_changes_only() -> None:
    table = RouteTable()
    calls: list[int] = []
    table.subscribe(lambda: calls.append(1))
    routes = [b("web", "web")]
    table.set_project("shop", routes)
    table.set_project("shop", list(routes))  # the same: no news
    table.set_project("shop", [b("web", "web", port=2000)])
    table.remove_project("shop")
    table.remove_project("shop")
    assert len(calls) == 3


def test_a_host_claimed_twice_keeps_the_first() -> None:
    table = RouteTable()
    first, second = b("one", "web"), b("two", "web")
    table.set_project("shop", [first, second])
    assert table.lookup("web.shop.localhost") == ("shop", first)
