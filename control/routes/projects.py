"""Projects and environments."""

from __future__ import annotations

from aiohttp import web

from control.bodies import parse
from control.http import json_response, path_key
from control.routing import Api, Reply
from control.schemas import ENVIRONMENT_PATCH, NEW_ENVIRONMENT, NEW_PROJECT, PROJECT_PATCH
from control.store import TenantStore
from control.tx import Outcome, reading, write

api = Api("/api/v1")
CREATE_PROBLEMS = (400, 401, 409, 413, 415, 422)


@api.operation(
    "GET", "/projects", operation_id="listProjects", tag="projects",
    summary="List the tenant's projects",
    replies=(Reply(200, "The projects, by key", "ProjectList"),), problems=(401,),
)  # fmt: skip
async def list_projects(request: web.Request) -> web.Response:
    async with reading(request) as store:
        projects = await store.projects.all()
    return json_response({"items": [p.to_api() for p in projects]})


@api.operation(
    "POST", "/projects", operation_id="createProject", tag="projects",
    summary="Create a project", body=NEW_PROJECT, headers=("IdempotencyKey",),
    replies=(Reply(201, "The new project", "Project", ("Location",)),),
    problems=CREATE_PROBLEMS,
)  # fmt: skip
async def create_project(request: web.Request) -> web.Response:
    body = await parse(request, NEW_PROJECT)

    async def create(store: TenantStore) -> Outcome:
        project = await store.projects.create(body["key"], body.get("name", body["key"]))
        location = f"/api/v1/projects/{project.key}"
        return Outcome(project.to_api(), 201, {"Location": location})

    return await write(request, create, idempotent=True)


@api.operation(
    "GET", "/projects/{project}", operation_id="getProject", tag="projects",
    summary="Read a project", replies=(Reply(200, "The project", "Project"),),
    problems=(401, 404),
)  # fmt: skip
async def get_project(request: web.Request) -> web.Response:
    key = path_key(request, "project")
    async with reading(request) as store:
        project = await store.projects.get(key)
    return json_response(project.to_api())


@api.operation(
    "GET", "/projects/{project}/environments", operation_id="listEnvironments",
    tag="projects", summary="List a project's environments",
    replies=(Reply(200, "The environments, by key", "EnvironmentList"),), problems=(401, 404),
)  # fmt: skip
async def list_environments(request: web.Request) -> web.Response:
    key = path_key(request, "project")
    async with reading(request) as store:
        environments = await store.projects.environments(await store.projects.get(key))
    return json_response({"items": [e.to_api() for e in environments]})


@api.operation(
    "POST", "/projects/{project}/environments", operation_id="createEnvironment",
    tag="projects", body=NEW_ENVIRONMENT, headers=("IdempotencyKey",),
    summary="Create an environment (every flag starts DISABLED there)",
    replies=(Reply(201, "The new environment", "Environment", ("Location",)),),
    problems=(*CREATE_PROBLEMS, 404),
)  # fmt: skip
async def create_environment(request: web.Request) -> web.Response:
    project_key = path_key(request, "project")
    body = await parse(request, NEW_ENVIRONMENT)

    async def create(store: TenantStore) -> Outcome:
        env = await store.projects.create_environment(
            project_key,
            body["key"],
            body.get("name", body["key"]),
            body.get("fractionalBucketing"),
        )
        location = f"/api/v1/projects/{project_key}/environments/{env.key}"
        return Outcome(env.to_api(), 201, {"Location": location})

    return await write(request, create, idempotent=True)


@api.operation(
    "GET", "/projects/{project}/environments/{environment}", operation_id="getEnvironment",
    tag="projects", summary="Read an environment (its version is the edge's replication clock)",
    replies=(Reply(200, "The environment", "Environment"),), problems=(401, 404),
)  # fmt: skip
async def get_environment(request: web.Request) -> web.Response:
    project_key, env_key = path_key(request, "project"), path_key(request, "environment")
    async with reading(request) as store:
        project = await store.projects.get(project_key)
        env = await store.projects.environment(project, env_key)
    return json_response(env.to_api())


@api.operation(
    "PATCH", "/projects/{project}", operation_id="updateProject", tag="projects",
    summary="Rename a project (its key stays)", body=PROJECT_PATCH,
    replies=(Reply(200, "The project as it is now", "Project"),),
    problems=(400, 401, 404, 413, 415),
)  # fmt: skip
async def update_project(request: web.Request) -> web.Response:
    key = path_key(request, "project")
    changes = await parse(request, PROJECT_PATCH)

    async def update(store: TenantStore) -> Outcome:
        return Outcome((await store.projects.update(key, changes)).to_api())

    return await write(request, update)


@api.operation(
    "PATCH", "/projects/{project}/environments/{environment}", operation_id="updateEnvironment",
    tag="projects", body=ENVIRONMENT_PATCH,
    summary="Rename an environment or change its fractional bucketing scheme (its key stays)",
    replies=(Reply(200, "The environment as it is now", "Environment"),),
    problems=(400, 401, 404, 413, 415),
)  # fmt: skip
async def update_environment(request: web.Request) -> web.Response:
    project_key, env_key = path_key(request, "project"), path_key(request, "environment")
    changes = await parse(request, ENVIRONMENT_PATCH)

    async def update(store: TenantStore) -> Outcome:
        env = await store.projects.update_environment(project_key, env_key, changes)
        return Outcome(env.to_api())

    return await write(request, update)


@api.operation(
    "DELETE", "/projects/{project}", operation_id="deleteProject", tag="projects",
    summary="Delete (archive) a project, its environments and their keys; edges drop them",
    replies=(Reply(200, "What the deletion took", "Deletion"),), problems=(401, 404),
)  # fmt: skip
async def delete_project(request: web.Request) -> web.Response:
    key = path_key(request, "project")

    async def delete(store: TenantStore) -> Outcome:
        return Outcome((await store.projects.delete(key)).to_api())

    return await write(request, delete)


@api.operation(
    "DELETE", "/projects/{project}/environments/{environment}",
    operation_id="deleteEnvironment", tag="projects",
    summary="Delete (archive) an environment and its keys; edges drop it",
    replies=(Reply(200, "What the deletion took", "Deletion"),), problems=(401, 404),
)  # fmt: skip
async def delete_environment(request: web.Request) -> web.Response:
    project_key, env_key = path_key(request, "project"), path_key(request, "environment")

    async def delete(store: TenantStore) -> Outcome:
        return Outcome((await store.projects.delete_environment(project_key, env_key)).to_api())

    return await write(request, delete)
